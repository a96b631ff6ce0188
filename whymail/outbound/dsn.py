"""Delivery status notifications (bounces and delay warnings) in the RFC 3464 format.

`build_dsn` returns the whole message, CRLF line ends, ready to be queued with the null sender
(RFC 3464 §2: "MAIL FROM:<>"). `should_bounce` is the loop guard the queue asks first: no DSN about a
message that is itself a DSN or has no return path.
"""

from __future__ import annotations

import email.utils
import quopri
import re
import secrets
import textwrap
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Literal, Protocol

Action = Literal["failed", "delayed"]
Ret = Literal["FULL", "HDRS"]

# Above this size only the header is returned, whatever RET says (as Postfix's bounce_size_limit).
MAX_RETURNED_SIZE = 10 * 1024 * 1024
_FOLD_AT = 78
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$", re.ASCII)


class RecipientReport(Protocol):
    """What the DSN needs to know about one recipient (RecipientResult has all of it)."""

    recipient: str
    code: int
    enhanced: str
    text: str
    remote_host: str


# --- the loop guard ----------------------------------------------------------------------------


def is_bounce(sender: str, headers: Message | bytes | None = None) -> bool:
    """True for a message that is itself a bounce: null reverse-path, or a delivery-status report."""
    if sender.strip() in ("", "<>"):
        return True
    if headers is None:
        return False
    if isinstance(headers, bytes):
        headers = BytesHeaderParser().parsebytes(headers)
    return (
        headers.get_content_type() == "multipart/report"
        and str(headers.get_param("report-type", "")).lower() == "delivery-status"
    )


def should_bounce(
    sender: str,
    headers: Message | bytes | None = None,
    *,
    action: Action = "failed",
    notify: Collection[str] | None = None,
) -> bool:
    """Whether to send the sender a DSN with `action` about this message.

    Never for a null sender (RFC 5321 §4.5.5, RFC 3464 §2) or a message that is a DSN itself: that is
    how bounce loops start. `notify` is the RCPT NOTIFY parameter when the client gave one (RFC 3461
    §4.1): NEVER silences everything; without it failures are reported and delays are too (a "MAY"
    in RFC 3461 §6.2, the queue decides whether to ask)."""
    if is_bounce(sender, headers):
        return False
    if notify is None:
        return True
    wanted = {value.upper() for value in notify}
    if "NEVER" in wanted:
        return False
    return ("FAILURE" if action == "failed" else "DELAY") in wanted


# --- building ----------------------------------------------------------------------------------


def _date(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return email.utils.format_datetime(value)


def _clean(text: str) -> str:
    """One line of printable ASCII: DSN fields are 7bit (RFC 3464 §2.1) and must not be split."""
    text = " ".join(text.split())
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _field(name: str, value: str) -> str:
    """`Name: value`, folded at spaces to keep lines near 78 characters (RFC 5322 §2.2.3)."""
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}: {words[0]}"
    for word in words[1:]:
        if len(current) + 1 + len(word) > _FOLD_AT:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def _normalise_crlf(data: bytes) -> bytes:
    data = re.sub(rb"\r?\n|\r", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def _status_code(report: RecipientReport, action: Action) -> str:
    if _STATUS.match(report.enhanced or ""):
        return report.enhanced
    # No usable enhanced code: the class alone, matching the action (RFC 3463 §3.1 X.0.0).
    return "5.0.0" if action == "failed" else "4.0.0"


def _diagnostic(report: RecipientReport) -> str:
    if report.remote_host:
        # RFC 3464 §2.3.6: the reply of the Remote-MTA, as an SMTP diagnostic.
        reply = " ".join(p for p in (str(report.code) if report.code else "", report.enhanced, report.text) if p)
        return "smtp; " + _clean(reply)
    # Our own explanation (DNS, connection): a private diagnostic-type (RFC 3464 §2.1.2, "X-").
    return "X-WhyMail; " + _clean(report.text or "delivery failed")


def _delivery_status(
    reports: Sequence[RecipientReport],
    *,
    action: Action,
    reporting_mta: str,
    arrival_date: datetime,
    envid: str | None,
    last_attempt: datetime,
    will_retry_until: datetime | None,
) -> str:
    # RFC 3464 §2.2: the per-message fields, then one block per recipient after a blank line.
    text = _field("Reporting-MTA", f"dns; {reporting_mta}")
    if envid:
        text += _field("Original-Envelope-Id", _clean(envid))
    text += _field("Arrival-Date", _date(arrival_date))
    for report in reports:
        text += "\r\n"
        text += _field("Final-Recipient", f"rfc822; {_clean(report.recipient)}")
        text += _field("Action", action)
        text += _field("Status", _status_code(report, action))
        if report.remote_host:
            text += _field("Remote-MTA", f"dns; {_clean(report.remote_host)}")
        text += _field("Diagnostic-Code", _diagnostic(report))
        text += _field("Last-Attempt-Date", _date(last_attempt))
        if action == "delayed" and will_retry_until is not None:
            text += _field("Will-Retry-Until", _date(will_retry_until))
    return text


def _explanation(
    reports: Sequence[RecipientReport], *, action: Action, reporting_mta: str, postmaster: str,
    will_retry_until: datetime | None, headers_only: bool,
) -> str:
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if action == "failed":
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. " + (
                "Its header is attached below." if headers_only else "It's attached below."
            ),
        ]
    else:
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            "Your message could not be delivered yet to the recipients below.",
        ]
        if will_retry_until is not None:
            lines.append(f"The mail system will keep trying until {_date(will_retry_until)}.")
    lines += ["", f"For further assistance, please send mail to <{postmaster}>.", ""]
    for report in reports:
        where = f"host {report.remote_host} said: " if report.remote_host else ""
        reply = " ".join(p for p in (str(report.code) if report.code else "", report.enhanced, report.text) if p)
        line = " ".join(f"<{report.recipient}>: {where}{reply}".split())
        lines += textwrap.wrap(line, width=_FOLD_AT, subsequent_indent="    ") + [""]
    return "\r\n".join(lines)


def _text_part(text: str) -> bytes:
    if text.isascii():
        head = "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n"
        return (head + "\r\n" + text).encode("ascii")
    head = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    encoded = quopri.encodestring(text.encode("utf-8").replace(b"\r\n", b"\n"))
    return head.encode("ascii") + b"\r\n" + _normalise_crlf(encoded)


def _boundary(*parts: bytes) -> str:
    while True:
        boundary = "=_dsn_" + secrets.token_hex(12)
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    original_message: bytes,
    recipients: Sequence[RecipientReport],
    action: Action,
    arrival_date: datetime,
    envid: str | None = None,
    ret: Ret | None = None,
    postmaster: str = "",
    last_attempt: datetime | None = None,
    will_retry_until: datetime | None = None,
    max_returned_size: int = MAX_RETURNED_SIZE,
) -> bytes:
    """An RFC 3464 DSN (multipart/report, RFC 6522) for `recipients` of one message, as CRLF bytes.

    `ret` is the MAIL RET parameter (RFC 3461 §4.3): HDRS returns only the header, FULL or None
    the whole message, unless it is larger than `max_returned_size`."""
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    postmaster = postmaster or f"postmaster@{reporting_mta}"
    last_attempt = last_attempt or datetime.now(UTC)
    original = _normalise_crlf(original_message)
    headers_only = ret == "HDRS" or len(original) > max_returned_size
    returned = _header_block(original) if headers_only else original

    explanation = _text_part(_explanation(
        recipients, action=action, reporting_mta=reporting_mta, postmaster=postmaster,
        will_retry_until=will_retry_until, headers_only=headers_only,
    ))
    status = _delivery_status(
        recipients, action=action, reporting_mta=reporting_mta, arrival_date=arrival_date, envid=envid,
        last_attempt=last_attempt, will_retry_until=will_retry_until,
    ).encode("ascii")
    # message/rfc822 may not be base64/QP encoded (RFC 2046 §5.2.1): 8bit says what it holds.
    returned_cte = "7bit" if returned.isascii() else "8bit"
    if headers_only:
        returned_head = "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n"
    else:
        returned_head = "Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n"
    returned_part = f"{returned_head}Content-Transfer-Encoding: {returned_cte}\r\n\r\n".encode("ascii") + returned

    boundary = _boundary(explanation, status, returned)
    subject = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    head = (
        _field("From", f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>")
        # RFC 3464 §2 wants replies to reach a human responsible for the mail system.
        + _field("Reply-To", f"<{postmaster}>")
        + _field("To", f"<{_clean(original_sender)}>")
        + _field("Subject", subject)
        + _field("Date", _date(last_attempt))
        + _field("Message-ID", email.utils.make_msgid("dsn", domain=reporting_mta))
        # RFC 3834 §5: an automatic response; auto-responders must not answer it.
        + _field("Auto-Submitted", "auto-replied")
        + "MIME-Version: 1.0\r\n"
        + f'Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="{boundary}"\r\n'
        + f"Content-Transfer-Encoding: {returned_cte}\r\n"
        + "\r\n"
        + "This is a MIME-encapsulated message.\r\n"
    ).encode("ascii")
    dash = f"\r\n--{boundary}\r\n".encode("ascii")
    # The CRLF before a boundary belongs to the delimiter (RFC 2046 §5.1.1): the text parts give up
    # their last line end to it, the returned message keeps its own so that it comes back unchanged.
    return b"".join([
        head,
        dash,
        b"Content-Description: Notification\r\n" + explanation[:-2],
        dash,
        b"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n" + status[:-2],
        dash,
        returned_part,
        f"\r\n--{boundary}--\r\n".encode("ascii"),
    ])
