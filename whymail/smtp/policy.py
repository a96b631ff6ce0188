"""Inbound SMTP policy: what to answer to RCPT, and to DATA, as plain functions returning replies."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from whymail.smtp.replies import SmtpReply

TOO_MANY_RECIPIENTS = SmtpReply(452, "4.5.3", "Too many recipients")
UNKNOWN_USER = SmtpReply(550, "5.1.1", "User unknown in local recipient table")
DISABLED_USER = SmtpReply(550, "5.2.1", "Mailbox disabled, not accepting messages")
RELAY_DENIED = SmtpReply(550, "5.7.1", "Relaying denied: authentication required for non-local recipients")
MAILBOX_FULL = SmtpReply(452, "4.2.2", "Mailbox full, try again later")
MESSAGE_TOO_BIG = SmtpReply(552, "5.3.4", "Message size exceeds fixed maximum message size")
BAD_ADDRESS = SmtpReply(553, "5.1.3", "Malformed address")
TRY_AGAIN = SmtpReply(451, "4.3.0", "Temporary failure storing the message, try again later")
STORED = SmtpReply(250, "2.0.0", "OK: queued")
RECIPIENT_OK = SmtpReply(250, "2.1.5", "Recipient OK")
SENDER_OK = SmtpReply(250, "2.1.0", "Sender OK")
TOO_MANY_CONNECTIONS = SmtpReply(421, "4.7.0", "Too many connections from your address, try again later")
RATE_LIMITED = SmtpReply(421, "4.7.0", "Too many commands, slow down and try again later")
FORWARDING_UNAVAILABLE = SmtpReply(451, "4.3.2", "Forwarding to remote addresses is not available")
DIRECTORY_UNAVAILABLE = SmtpReply(451, "4.3.0", "Recipient lookup temporarily unavailable")
TOO_MANY_HOPS = SmtpReply(554, "5.4.6", "Too many hops (Received header fields): mail loop?")
MAX_HOPS = 100  # RFC 5321 §6.3: "a simple counting of the number of Received: header fields ... 100"


def hop_count(content: bytes) -> int:
    """Received header fields in the header section of `content` (before the first empty line)."""
    end = content.find(b"\r\n\r\n")
    head = b"\r\n" + (content if end < 0 else content[:end])
    return head.count(b"\r\nReceived:") + head.count(b"\r\nreceived:") + head.count(b"\r\nRECEIVED:")


@dataclass(frozen=True, slots=True)
class RcptContext:
    """What the RCPT decision depends on beyond the address itself."""

    authenticated: bool
    accepted_so_far: int
    max_recipients: int
    declared_size: int  # SIZE= of MAIL FROM (RFC 1870), 0 when absent
    forwarding: bool = False  # alias destinations outside our domains can be queued


def rcpt_reply(resolution, ctx: RcptContext, usage_of: Callable[[int], int]) -> SmtpReply:
    """The reply to one RCPT TO, given the Directory's resolution of the address.

    `usage_of(user_id)` gives the freshest known storage use of a local user, for the quota check
    (RFC 1870: a declared SIZE lets us refuse early instead of after the body was sent).
    """
    if ctx.accepted_so_far >= ctx.max_recipients:
        return TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.10: 452, the client sends the rest later
    if resolution.kind == "unknown_user":
        return UNKNOWN_USER
    if resolution.kind == "disabled":
        return DISABLED_USER
    if resolution.kind == "remote":
        return RELAY_DENIED if not ctx.authenticated else RECIPIENT_OK
    for user in resolution.users:
        if user.quota_bytes and usage_of(user.user_id) + ctx.declared_size > user.quota_bytes:
            return MAILBOX_FULL
    if resolution.remote_addresses and not ctx.forwarding:
        # Forwarding off-site needs the outbound queue; without it, never accept and drop.
        return FORWARDING_UNAVAILABLE
    if not resolution.users and not resolution.remote_addresses:
        return UNKNOWN_USER
    return RECIPIENT_OK


def quota_reply(recipients: Iterable, size: int, usage_of: Callable[[int], int]) -> SmtpReply | None:
    """MAILBOX_FULL when a message of `size` bytes would take any recipient over its quota, else None.

    For the end of DATA, before anything is stored: the message is delivered to every recipient or to
    none, so a client that retries after the 452 does not store one more copy for the recipients that
    had room. `recipients` have `user_id` and `quota_bytes` (0: unlimited); `usage_of(user_id)` gives
    the freshest known storage use. The shard still checks (it knows the exact usage).
    """
    for recipient in recipients:
        quota = recipient.quota_bytes
        if quota and usage_of(recipient.user_id) + size > quota:
            return MAILBOX_FULL
    return None


def declared_size(mail_options: list[str]) -> int:
    """The SIZE= parameter of MAIL FROM (RFC 1870), 0 when absent or malformed."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isascii() and value.isdigit():  # "²".isdigit() is True
            return int(value)
    return 0
