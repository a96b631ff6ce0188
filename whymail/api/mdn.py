"""Read receipts: who a received message asks for one, and the MDN (RFC 8098) that answers it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from whymail.mime.compose import is_address, is_message_id
from whymail.mime.headers import first_value, split_header
from whymail.mime.view import decode_words

_POLICY = policy.SMTP.clone(cte_type="7bit", max_line_length=78)
MAX_RECEIPT_RECIPIENTS = 5


@dataclass(frozen=True, slots=True)
class ReceiptRequest:
    """What the received message says about itself and who wants to know it was displayed."""

    notify: tuple[str, ...]  # Disposition-Notification-To addresses
    subject: str
    original_message_id: str | None


def receipt_request(raw: bytes) -> ReceiptRequest:
    """Read the Disposition-Notification-To header (RFC 8098 §2.1); `notify` is empty when there is none."""
    fields, _ = split_header(raw, 0, len(raw))
    header = first_value(raw, fields, "disposition-notification-to") or ""
    notify: list[str] = []
    for _, addr in getaddresses([decode_words(header)]):
        if is_address(addr) and addr.lower() not in (a.lower() for a in notify):
            notify.append(addr)
    message_id = (first_value(raw, fields, "message-id") or "").strip()
    subject = decode_words(first_value(raw, fields, "subject") or "").replace("\r", "").replace("\n", "")
    return ReceiptRequest(
        notify=tuple(notify[:MAX_RECEIPT_RECIPIENTS]), subject=subject.strip(),
        original_message_id=message_id if is_message_id(message_id) else None,
    )


def build_mdn(
    request: ReceiptRequest, *, reader: str, reporting_host: str, now: datetime | None = None
) -> bytes:
    """A `displayed` MDN sent by the user's own action (RFC 8098 §3.2.6: manual-action/MDN-sent-manually)."""
    local, _, domain = reader.rpartition("@")
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = Address(username=local, domain=domain)
    msg["To"] = ", ".join(request.notify)
    msg["Subject"] = f"Read: {request.subject}"[:900]
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=domain)
    if request.original_message_id:
        msg["In-Reply-To"] = request.original_message_id
        msg["References"] = request.original_message_id
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5: no auto-reply answers it
    msg["MIME-Version"] = "1.0"
    msg.set_content(
        f"Your message to {reader} was displayed.\n"
        "This is no guarantee that the message has been read or understood.\n"
    )
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", "disposition-notification")
    notification = EmailMessage(policy=_POLICY)
    lines = [
        f"Reporting-UA: {reporting_host}; WhyMail",
        f"Final-Recipient: rfc822;{reader}",
        *([f"Original-Message-ID: {request.original_message_id}"] if request.original_message_id else []),
        "Disposition: manual-action/MDN-sent-manually; displayed",
    ]
    notification.set_payload("\r\n".join(lines) + "\r\n")
    notification["Content-Type"] = "message/disposition-notification"
    notification["Content-Transfer-Encoding"] = "7bit"
    msg.attach(notification)
    return msg.as_bytes(policy=_POLICY)
