"""Outgoing mail built from what a webmail form sends: text (+ HTML) alternatives, attachments, threading.

The result is 7-bit clean with CRLF line endings (any relay accepts it); Bcc recipients are only in
the envelope, never in the header (RFC 5322 §3.6.3 allows either; the header would leak them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

_POLICY = policy.SMTP.clone(cte_type="7bit", max_line_length=78)
_MESSAGE_ID = re.compile(r"<[^<>\s\x00-\x1f\x7f]{1,990}>")
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}")
_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


class ComposeError(ValueError):
    """The input cannot become a message (the caller answers 400)."""


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    from_addr: str
    to: tuple[str, ...]
    subject: str
    text: str
    from_name: str = ""
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    html: str | None = None
    attachments: tuple[OutgoingAttachment, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    data: bytes
    message_id: str
    recipients: list[str] = field(default_factory=list)  # envelope RCPT TO: to + cc + bcc, each once


def is_address(value: str) -> bool:
    """A plain addr-spec we are willing to send to (no display name, no comments, no quoting)."""
    return bool(_ADDRESS.fullmatch(value)) and not value.endswith(".") and ".." not in value


def is_message_id(value: str) -> bool:
    return bool(_MESSAGE_ID.fullmatch(value))


def _address(addr: str, name: str = "") -> Address:
    if not is_address(addr):
        raise ComposeError(f"not an email address: {addr!r}")
    local, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _no_line_breaks(value: str, what: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ComposeError(f"{what} must not contain line breaks")
    return value


def build_message(out: Outgoing, *, now: datetime | None = None, message_id: str | None = None) -> BuiltMessage:
    """The RFC 5322 bytes of `out`, its Message-ID and envelope recipients; ComposeError on bad input."""
    if not (out.to or out.cc or out.bcc):
        raise ComposeError("at least one recipient is needed")
    domain = out.from_addr.rpartition("@")[2]
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _address(out.from_addr, _no_line_breaks(out.from_name, "from_name"))
    if out.to:
        msg["To"] = [_address(a) for a in out.to]
    if out.cc:
        msg["Cc"] = [_address(a) for a in out.cc]
    for bcc in out.bcc:
        _address(bcc)
    msg["Subject"] = _no_line_breaks(out.subject, "subject")
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    mid = message_id or make_msgid(domain=domain)
    msg["Message-ID"] = mid
    references = list(out.references)
    if out.in_reply_to is not None:
        if not is_message_id(out.in_reply_to):
            raise ComposeError("in_reply_to is not a Message-ID")
        msg["In-Reply-To"] = out.in_reply_to
        if out.in_reply_to not in references:
            references.append(out.in_reply_to)  # RFC 5322 §3.6.4: the parent ends the list
    for ref in references:
        if not is_message_id(ref):
            raise ComposeError(f"not a Message-ID in references: {ref!r}")
    if references:
        msg["References"] = " ".join(references)
    msg["MIME-Version"] = "1.0"
    msg.set_content(out.text)
    if out.html is not None:
        msg.add_alternative(out.html, subtype="html")
    for attachment in out.attachments:
        kind = attachment.content_type.lower().strip()
        if not _TYPE.fullmatch(kind):
            raise ComposeError(f"bad content type {attachment.content_type!r}")
        filename = _no_line_breaks(attachment.filename, "attachment filename").strip() or "attachment"
        maintype, subtype = kind.split("/", 1)
        if maintype in ("multipart", "message"):  # their bodies have rules of their own: send as bytes
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=filename)
    recipients: list[str] = []
    for addr in (*out.to, *out.cc, *out.bcc):
        if addr.lower() not in (r.lower() for r in recipients):
            recipients.append(addr)
    data = msg.as_bytes(policy=_POLICY)
    return BuiltMessage(data=data, message_id=mid, recipients=recipients)
