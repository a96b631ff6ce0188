"""Message submission (RFC 6409) on 587 (STARTTLS) and 465 (implicit TLS, RFC 8314): AUTH first.

The handler shares the inbound hooks' checks where they apply and differs where submission does:
AUTH PLAIN/LOGIN through the same guarded authenticator as IMAP (lockouts counted together), the
envelope sender must be the user's own address or an alias that delivers to them (553 5.7.1),
any recipient may be remote, and at the end of DATA the message — with a Message-ID and Date
added when the client left them out (RFC 6409 §8.1, §8.3), scanned, DKIM-signed — gets a copy in
the sender's Sent folder and goes into the outbound queue. `250` only after both are committed.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiosmtpd.smtp import MISSING, Envelope, Session

from whymail.config import Config
from whymail.smtp import policy
from whymail.smtp.inspect import from_addresses
from whymail.smtp.received import received_header
from whymail.smtp.replies import SmtpReply
from whymail.smtp.server import InboundHandler, SmtpStats, _malformed_reason
from whymail.store.models import DeliveryOutcome, Recipient

log = logging.getLogger("whymail.smtp.submission")

class ServiceUnavailable(Exception):
    """A backend the session needs (PostgreSQL) is not reachable right now."""


AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure, try again later"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
SENDER_NOT_OWNED = SmtpReply(553, "5.7.1", "Sender address rejected: not owned by the authenticated user")
NULL_SENDER = SmtpReply(553, "5.7.1", "Submission requires a sender address")
HEADER_FROM_NOT_OWNED = SmtpReply(
    553, "5.7.1", "From header address not owned by the authenticated user"
)
DAILY_LIMIT = SmtpReply(550, "5.4.5", "Daily sending limit reached, try again tomorrow")
QUEUE_FAILED = SmtpReply(451, "4.3.0", "Temporary failure queueing the message, try again later")

# Coroutines the gateway provides (the handler knows nothing of Ray or PostgreSQL).
Authenticate = Callable[[str, str, str], Awaitable[object | None]]  # (user, password, ip) -> Account | None
SentToday = Callable[[int], Awaitable[int]]
QueueMessage = Callable[[bytes, str, list[str], int], Awaitable[uuid.UUID]]
StoreCopy = Callable[[bytes, Recipient, str], Awaitable[DeliveryOutcome]]
Transform = Callable[[bytes, str], Awaitable[tuple[bytes, SmtpReply | None]]]


def _has_header(head: bytes, name: bytes) -> bool:
    lowered = b"\n" + head.lower()
    return b"\n" + name.lower() + b":" in lowered


def complete_headers(content: bytes, hostname: str) -> bytes:
    """Add Message-ID and Date when the client did not (RFC 6409 §8.3, §8.1)."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[:end]
    added = b""
    if not _has_header(head, b"message-id"):
        added += f"Message-ID: {email.utils.make_msgid(domain=hostname)}\r\n".encode()
    if not _has_header(head, b"date"):
        added += f"Date: {email.utils.formatdate(localtime=False)}\r\n".encode()
    return added + content


class SubmissionHandler(InboundHandler):
    offers_auth = True

    def __init__(
        self,
        config: Config,
        directory,
        *,
        authenticate: Authenticate,
        sent_today: SentToday,
        queue_message: QueueMessage,
        store_copy: StoreCopy,
        transform: Transform,
        usage: dict[int, int],
        stats: SmtpStats,
    ) -> None:
        super().__init__(config, directory, self._no_local_delivery, usage, stats)
        self._authenticate = authenticate
        self._sent_today = sent_today
        self._queue_message = queue_message
        self._store_copy = store_copy
        self._transform = transform
        self._session_sends: dict[int, int] = {}

    @staticmethod
    async def _no_local_delivery(body, recipients, sender):  # pragma: no cover - never called
        raise RuntimeError("submission delivers through the queue")

    # -- AUTH (RFC 4954) -------------------------------------------------------------------------

    async def handle_AUTH(self, server, session: Session, envelope: Envelope, args: list[str]):
        mechanism = args[0].upper()
        initial = args[1] if len(args) > 1 else None
        if mechanism == "PLAIN":
            blob = await self._initial_or_challenge(server, initial, "")
            if blob is None:
                return None
            parts = blob.split(b"\0")
            if len(parts) != 3:
                return "501 5.5.2 Malformed PLAIN response"
            _authzid, username_b, password_b = parts
        elif mechanism == "LOGIN":
            username_b = await self._initial_or_challenge(server, initial, "Username:")
            if username_b is None:
                return None
            password_b = await server.challenge_auth("Password:")
            if password_b is MISSING:
                return None
        else:
            return "504 5.5.4 Unrecognized authentication type"
        try:
            username = username_b.decode("utf-8")
            password = password_b.decode("utf-8")
        except UnicodeDecodeError:
            return AUTH_INVALID
        ip = str(session.peer[0]) if session.peer else "?"
        try:
            account = await self._authenticate(username, password, ip) if username and password else None
        except ServiceUnavailable:
            return AUTH_TEMPFAIL  # RFC 4954 §6
        except Exception as exc:
            log.error("authentication error: %r", exc)
            return AUTH_TEMPFAIL
        if account is None:
            return AUTH_INVALID
        session.authenticated = True
        session.auth_data = account
        log.info("submission login", extra={"user": getattr(account, "email", username), "peer": ip})
        return AUTH_OK

    @staticmethod
    async def _initial_or_challenge(server, initial: str | None, prompt: str) -> bytes | None:
        if initial is not None:
            if initial == "=":  # RFC 4954 §4: "=" is an empty initial response
                return b""
            try:
                return base64.b64decode(initial, validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return None
        answer = await server.challenge_auth(prompt)
        return None if answer is MISSING else answer

    # -- envelope ----------------------------------------------------------------------------------

    def _account(self, session: Session):
        return session.auth_data if session.authenticated else None

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, mail_options):
        account = self._account(session)
        if account is None:  # aiosmtpd checks first; kept for safety
            return "530 5.7.0 Authentication required"
        if not address:
            return str(NULL_SENDER)
        snapshot = self._directory.current
        if snapshot is None:
            return str(policy.DIRECTORY_UNAVAILABLE)
        if not self._owns(account, address):
            log.info("submission sender refused", extra={"user": account.email, "from": address})
            return str(SENDER_NOT_OWNED)
        limit = self._config.limits.per_user_daily_send
        try:
            sent = await self._sent_today(account.user_id)
        except Exception as exc:
            log.warning("daily count unavailable: %r", exc)
            return str(QUEUE_FAILED)
        if sent >= limit:
            log.warning("daily send limit reached", extra={"user": account.email, "limit": limit})
            return str(DAILY_LIMIT)
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    def _owns(self, account, address: str) -> bool:
        """The address is the account's own, or a local alias that delivers to it."""
        if address.lower() == account.email.lower():
            return True
        snapshot = self._directory.current
        if snapshot is None:
            return False
        resolution = snapshot.resolve(address)
        return resolution.kind == "local" and any(u.user_id == account.user_id for u in resolution.users)

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options):
        snapshot = self._directory.current
        if snapshot is None:
            return str(policy.DIRECTORY_UNAVAILABLE)
        resolution = snapshot.resolve(address)
        malformed = _malformed_reason(address) if resolution.kind in ("unknown_user", "remote") else None
        if malformed is not None and malformed is not policy.RELAY_DENIED:
            return str(malformed)
        ctx = policy.RcptContext(
            authenticated=True,
            accepted_so_far=len(envelope.rcpt_tos),
            max_recipients=self._config.server.smtp.max_recipients,
            declared_size=getattr(envelope, "whymail_size", 0),
            forwarding=True,
        )
        reply = policy.rcpt_reply(resolution, ctx, lambda user_id: self._usage.get(user_id, 0))
        if reply == policy.MAILBOX_FULL:
            reply = policy.RECIPIENT_OK  # the queue delivers, defers and bounces; the sender is told then
        if not reply.is_success:
            self._stats.recipients_refused += 1
            self._stats.count(reply)
            return str(reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return str(reply)

    async def handle_DATA(self, server, session: Session, envelope: Envelope):
        account = self._account(session)
        if account is None:
            return "530 5.7.0 Authentication required"
        queue_id = uuid.uuid4().hex[:16].upper()
        protocol = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP") + ("S" if session.ssl else "") + "A"
        header = received_header(
            helo=session.host_name or "unknown",
            peer_ip=str(session.peer[0]),
            hostname=self._config.server.hostname,
            protocol=protocol,  # RFC 3848: ESMTPSA, authenticated over TLS
            queue_id=queue_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            timestamp=time.time(),
        )
        content = complete_headers(envelope.original_content or b"", self._config.server.hostname)
        reply = await self._submit(account, header + content, envelope, queue_id)
        self._stats.count(reply)
        if reply.is_success:
            self._stats.messages_accepted += 1
        else:
            self._stats.messages_refused += 1
        log.info(
            "submission %s", "queued" if reply.is_success else "refused",
            extra={"queue_id": queue_id, "user": account.email, "from": envelope.mail_from,
                   "rcpts": len(envelope.rcpt_tos), "reply": str(reply)},
        )
        return str(reply)

    async def _submit(self, account, message: bytes, envelope: Envelope, queue_id: str) -> SmtpReply:
        try:
            if await self._sent_today(account.user_id) >= self._config.limits.per_user_daily_send:
                return DAILY_LIMIT
        except Exception as exc:
            log.warning("daily count unavailable: %r", exc)
            return QUEUE_FAILED
        # The header From is what readers see and what DKIM signs and DMARC checks: the same rule as
        # for the envelope sender, or a user could sign as another of our domains.
        if not all(self._owns(account, author) for author in from_addresses(message)):
            return HEADER_FROM_NOT_OWNED
        message, refusal = await self._transform(message, envelope.mail_from)
        if refusal is not None:
            return refusal
        try:
            await self._queue_message(message, envelope.mail_from, list(envelope.rcpt_tos), account.user_id)
        except Exception as exc:
            log.error("queueing failed: %r", exc)
            return QUEUE_FAILED
        # Queued: the message will go out, so the answer is 250 whatever happens to the Sent copy
        # (refusing now would make the client send it a second time).
        snapshot = self._directory.current
        user = snapshot.user(account.email) if snapshot is not None else None
        if user is not None:
            sent = Recipient(user_id=user.user_id, domain=user.domain, local_part=user.local_part,
                             quota_bytes=0)  # the user's own copy: never refuse sending over a full Sent
            try:
                outcome = await self._store_copy(message, sent, envelope.mail_from)
                if not outcome.ok:
                    log.warning("sent copy not stored: %s %s", outcome.error_code, outcome.error_text)
            except Exception as exc:
                log.error("sent copy not stored: %r", exc)
        return SmtpReply(250, "2.0.0", f"OK: queued as {queue_id}")
