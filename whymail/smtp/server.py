"""The inbound SMTP session on aiosmtpd: hooks that apply `whymail.smtp.policy` and hand mail over.

No Ray here: the gateway actor passes a `deliver` coroutine (which batches towards the shards) and
a Directory cache. Everything a client can do wrong ends in an SMTP reply with an enhanced status
code; an unexpected error is logged with the session id and answered `451 4.3.0`, never a traceback.

`WhyMailSMTP` also replaces three hot paths of aiosmtpd (one event-loop thread serves every session):
replies are coalesced per RFC 2920 instead of one send + drain each (`push`), plain `<local@domain>`
paths are parsed by a regex instead of the email header parser (`_getaddr`), and the DATA stream is
read in chunks up to the next ".\r\n" instead of line by line (`smtp_DATA`, `whymail.smtp.data`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from whymail.config import Config
from whymail.directory.addresses import split_address
from whymail.ratelimit import ConnectionCounter, ConnectionRateLimiter, TokenBuckets
from whymail.smtp import policy
from whymail.smtp.data import DataReceiver
from whymail.smtp.received import received_header
from whymail.smtp.replies import SmtpReply, with_enhanced_code
from whymail.store.models import DeliveryOutcome, Recipient

log = logging.getLogger("whymail.smtp")

Deliver = Callable[[bytes, list[Recipient], str, str], Awaitable[list[DeliveryOutcome]]]  # body, users, from, folder


@dataclass(slots=True)
class SmtpStats:
    """Counters the gateway exposes (and later exports to Prometheus)."""

    sessions: int = 0
    messages_accepted: int = 0
    messages_refused: int = 0
    recipients_refused: int = 0
    by_reply: dict[str, int] = field(default_factory=dict)

    def count(self, reply: SmtpReply) -> None:
        key = f"{reply.code} {reply.enhanced}"
        self.by_reply[key] = self.by_reply.get(key, 0) + 1


class SessionRegistry:
    """Open sessions, for graceful shutdown: stop accepting, then let sessions in flight finish."""

    def __init__(self) -> None:
        self.sessions: set[WhyMailSMTP] = set()
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, session: WhyMailSMTP) -> None:
        self.sessions.add(session)
        self.empty.clear()

    def remove(self, session: WhyMailSMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self.empty.set()


def outcome_reply(outcomes: list[DeliveryOutcome], queue_id: str) -> SmtpReply:
    """The single reply to DATA for all recipients (RFC 5321 gives one reply per message).

    All stored: 250. Every recipient refused permanently: the first refusal. Otherwise a transient
    reply: a client that retries may store a second copy for the recipients that succeeded, which is
    better than a loss.
    """
    failures = [o for o in outcomes if not o.ok]
    if not failures:
        return SmtpReply(250, "2.0.0", f"OK: queued as {queue_id}")
    if len(failures) == len(outcomes) and all(f.error_code >= 500 for f in failures):
        first = failures[0]
        return SmtpReply(first.error_code, first.error_enhanced, first.error_text)
    transient = next((f for f in failures if f.error_code < 500), failures[0])
    if transient.error_code >= 500:
        return policy.TRY_AGAIN
    return SmtpReply(transient.error_code, transient.error_enhanced, transient.error_text)


def _malformed_reason(address: str) -> SmtpReply | None:
    """A reply for an address the directory could not even parse, None if it is well-formed."""
    _local, _, domain = address.rpartition("@")
    if domain.startswith("["):
        return policy.RELAY_DENIED  # an address literal is never one of our domains
    try:
        split_address(address)
    except ValueError as exc:
        return SmtpReply(553, "5.1.3", f"Malformed address: {exc}"[:200])
    return None


# A dot-atom (RFC 5322 §3.2.3) whose atext also admits any non-ASCII character except whitespace
# (RFC 6531 UTF-8 addresses; surrogate escapes of undecodable bytes included, as aiosmtpd keeps them).
_ATEXT = r"[^\x00-\x20\x7f()<>@,;:\\\".\[\]\s]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_PLAIN_PATH = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>")


def fast_getaddr(arg: str) -> tuple[str, str] | None:
    """aiosmtpd's `SMTP._getaddr(arg)` for the common cases, None when the full parser is needed.

    Handles the null path `<>` and a plain `<dot-atom@dot-atom>` (no quotes, comments, route or
    address literal) followed by nothing or by parameters, with exactly the (address, rest) that the
    original returns: after `>`, spaces are stripped (CFWS) except after `<>`. `local_part_limit`
    is the caller's business.
    """
    if arg[:1] != "<":
        return None
    if arg[1:2] == ">":
        return "<>", arg[2:]
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    rest = arg[match.end() :]
    if rest:
        first = rest[0]
        if first == " " or first == "\t":
            rest = rest.lstrip()
            first = rest[:1]
        if first == "(":
            return None  # a comment: the parser skips it
    return match.group(1), rest


class InboundHandler:
    """aiosmtpd hooks for the inbound MTA (port 25): local delivery only, no relaying."""

    offers_auth = False  # port 25 takes no logins: clients submit on 587/465

    def __init__(
        self,
        config: Config,
        directory,  # anything with `.current` -> DirectorySnapshot | None
        deliver: Deliver,
        usage: dict[int, int],
        stats: SmtpStats,
        inspector=None,  # whymail.smtp.inspect.MessageInspector: antivirus, SPF/DKIM/DMARC
        forward=None,  # async (body, addresses, sender) -> None: queue alias forwards to remote addresses
    ) -> None:
        self._config = config
        self._directory = directory
        self._deliver = deliver
        self._usage = usage
        self._stats = stats
        self._inspector = inspector
        self._forward = forward

    def _usage_of(self, snapshot_user) -> Callable[[int], int]:
        return lambda user_id: self._usage.get(user_id, snapshot_user.get(user_id, 0))

    async def handle_EHLO(self, server, session: Session, envelope: Envelope, hostname: str, responses):
        session.host_name = hostname
        # aiosmtpd lists SIZE, 8BITMIME, SMTPUTF8 (and STARTTLS/AUTH when set up); add what it lacks.
        head, tail = responses[:-1], responses[-1:]
        if not self.offers_auth:
            head = [line for line in head if not line.startswith("250-AUTH")]
        return [*head, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", *tail]

    async def handle_AUTH(self, server, session: Session, envelope: Envelope, args: list[str]):
        return "503 5.5.1 Authentication is available on the submission ports only"

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, mail_options):
        size = policy.declared_size(mail_options)
        if size > self._config.server.smtp.max_message_size:
            return str(policy.MESSAGE_TOO_BIG)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.whymail_size = size  # type: ignore[attr-defined]
        envelope.whymail_users = {}  # type: ignore[attr-defined]
        envelope.whymail_storage_used = {}  # type: ignore[attr-defined]  # the snapshot's, per user id
        return str(policy.SENDER_OK)

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options):
        snapshot = self._directory.current
        if snapshot is None:
            return str(policy.DIRECTORY_UNAVAILABLE)
        resolution = snapshot.resolve(address)
        if resolution.kind == "unknown_user":
            malformed = _malformed_reason(address)
            if malformed is not None:
                return str(malformed)
        users: dict[int, Recipient] = envelope.whymail_users  # type: ignore[attr-defined]
        ctx = policy.RcptContext(
            authenticated=False,
            accepted_so_far=len(envelope.rcpt_tos),
            max_recipients=self._config.server.smtp.max_recipients,
            declared_size=getattr(envelope, "whymail_size", 0),
            forwarding=self._forward is not None,
        )
        known_usage: dict[int, int] = envelope.whymail_storage_used  # type: ignore[attr-defined]
        for user in resolution.users:
            known_usage[user.user_id] = user.storage_used
        reply = policy.rcpt_reply(resolution, ctx, self._usage_of(known_usage))
        if not reply.is_success:
            self._stats.recipients_refused += 1
            self._stats.count(reply)
            log.info("rcpt refused", extra={"peer": session.peer[0], "rcpt": address, "reply": str(reply)})
            return str(reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if resolution.remote_addresses:
            forwards: list[str] = envelope.__dict__.setdefault("whymail_forwards", [])
            forwards.extend(a for a in resolution.remote_addresses if a not in forwards)
        for user in resolution.users:
            users[user.user_id] = Recipient(
                user_id=user.user_id, domain=user.domain, local_part=user.local_part, quota_bytes=user.quota_bytes
            )
        return str(reply)

    async def handle_DATA(self, server, session: Session, envelope: Envelope):
        queue_id = uuid.uuid4().hex[:16].upper()
        users: dict[int, Recipient] = getattr(envelope, "whymail_users", {})
        protocol = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP") if session.extended_smtp else "SMTP"
        if session.ssl:
            protocol += "S"
        header = received_header(
            helo=session.host_name or "unknown",
            peer_ip=str(session.peer[0]),
            hostname=self._config.server.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            timestamp=time.time(),
        )
        content = envelope.original_content or b""
        mailbox = "INBOX"
        reply = policy.TOO_MANY_HOPS if policy.hop_count(content) >= policy.MAX_HOPS else None
        if reply is None and self._inspector is not None:
            inspection = await self._inspector.inbound(
                content, client_ip=str(session.peer[0]), helo=session.host_name or "",
                mail_from=envelope.mail_from or "",
            )
            reply = inspection.reply
            header = inspection.headers + header
            if inspection.body is not None:
                content = inspection.body
            mailbox = inspection.mailbox
        body = header + content
        # All recipients or none: refuse before storing if the message does not fit one of them, else
        # the shards would store it for the others and the client's retry would add another copy.
        known_usage: dict[int, int] = getattr(envelope, "whymail_storage_used", {})
        if reply is None:
            reply = policy.quota_reply(users.values(), len(body), self._usage_of(known_usage))
        if reply is None:
            reply = await self._store(body, users, envelope, queue_id, mailbox)
        self._stats.count(reply)
        if reply.is_success:
            self._stats.messages_accepted += 1
        else:
            self._stats.messages_refused += 1
        if log.isEnabledFor(logging.INFO):
            log.info(
                "message %s",
                "accepted" if reply.is_success else "refused",
                extra={"queue_id": queue_id, "peer": session.peer[0], "from": envelope.mail_from,
                       "rcpts": len(envelope.rcpt_tos), "size": len(body), "reply": str(reply)},
            )
        return str(reply)

    async def _store(self, body: bytes, users: dict, envelope: Envelope, queue_id: str, mailbox: str) -> SmtpReply:
        sender = envelope.mail_from or ""
        forwards: list[str] = envelope.__dict__.get("whymail_forwards", [])
        if forwards and self._forward is not None:
            # Forwards first, under an id derived from the message: when the local part fails and the
            # client sends the message again, the forwards are not queued a second time.
            digest = hashlib.sha256(envelope.original_content or b"")
            digest.update("\0".join([sender, *sorted(forwards)]).encode("utf-8", "surrogateescape"))
            forward_id = uuid.UUID(bytes=digest.digest()[:16], version=4)
            try:
                await self._forward(body, forwards, sender, forward_id)
            except Exception as exc:
                log.error("forward to %s not queued: %r", forwards, exc)
                return policy.TRY_AGAIN
        outcomes = await self._deliver(body, list(users.values()), sender, mailbox) if users else []
        reply = outcome_reply(outcomes, queue_id) if outcomes else policy.STORED
        if reply is policy.STORED:
            reply = SmtpReply(250, "2.0.0", f"OK: queued as {queue_id}")
        return reply

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, ssl.SSLError | ConnectionError):
            # Scanners and broken clients on port 25: routine, not a server fault.
            log.info("smtp session ended by a client error: %r", error)
        else:
            log.error("smtp session error: %r", error, exc_info=error)
        return str(policy.TRY_AGAIN)


_MAX_HELD_REPLIES = 4096  # bytes of pipelined replies held back at most before sending


class WhyMailSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes, connection limits and command rate limits."""

    def __init__(
        self,
        handler: InboundHandler,
        *,
        connections: ConnectionCounter,
        command_rate: TokenBuckets,
        registry: SessionRegistry,
        stats: SmtpStats,
        connect_rate: ConnectionRateLimiter | None = None,
        implicit_tls: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._implicit_tls = implicit_tls
        self._connect_rate = connect_rate
        self._connections = connections
        self._command_rate = command_rate
        self._registry = registry
        self._stats = stats
        self._counted_ip: str | None = None
        self._refused = False
        self._lost = False
        self._tls_established = False
        self._raw_reply = False
        self._pending = bytearray()  # replies held back while pipelined commands wait (RFC 2920)
        self._deadline = 0.0  # loop time at which the idle timeout closes the session
        self._timer_fired = False
        self.session_id = uuid.uuid4().hex[:12]
        for command, method in list(self._smtp_methods.items()):
            self._smtp_methods[command] = self._rate_limited(method)

    def _rate_limited(self, method):
        # wraps: keeps aiosmtpd's @syntax help text, without which HELP lists no command at all.
        @functools.wraps(method)
        async def limited(arg):
            peer = self.session.peer[0] if self.session and self.session.peer else "?"
            if not self._command_rate.allow(str(peer)):
                await self.push(str(policy.RATE_LIMITED))
                self._stats.count(policy.RATE_LIMITED)
                self.transport.close()
                return
            await method(arg)

        return limited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is not None:
            # STARTTLS: aiosmtpd's smtp_STARTTLS sets `_original_transport` and the TLS layer calls this
            # again with the TLS transport once the handshake is done. Same connection, same session:
            # it is already counted and registered, and `connection_lost` will come only once.
            self._tls_established = True
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if not self._connections.acquire(ip):
            self._refused = True
            self._stats.count(policy.TOO_MANY_CONNECTIONS)
            transport.write(f"{policy.TOO_MANY_CONNECTIONS}\r\n".encode())  # type: ignore[attr-defined]
            transport.close()
            return
        self._counted_ip = ip
        self._stats.sessions += 1
        self._registry.add(self)
        super().connection_made(transport)
        if self._implicit_tls:
            # Port 465 (RFC 8314 §3.3): TLS from the first byte. aiosmtpd only knows STARTTLS; giving it
            # a TLS protocol object makes it offer AUTH and never offer STARTTLS (it only tests it for
            # truth). uvloop's TLS transports (Ray actors) have no `_ssl_protocol`: the transport will do.
            self._tls_protocol = getattr(transport, "_ssl_protocol", None) or transport
            self._tls_established = True
            self.session.ssl = transport.get_extra_info("ssl_object")

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused or self._lost:
            return  # refused: nothing was counted; lost: already done (at most once, whoever calls)
        self._lost = True
        self._pending.clear()  # nobody left to read them
        if self._counted_ip is not None:
            self._connections.release(self._counted_ip)
            self._counted_ip = None
        self._registry.remove(self)
        super().connection_lost(error)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        # RFC 4954 §4: mechanism names are case-insensitive; aiosmtpd compares them as written.
        mechanism, sep, rest = arg.partition(" ")
        await super().smtp_AUTH(mechanism.upper() + sep + rest)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        if self._tls_protocol is not None and not self._tls_established and not self._lost:
            # The handshake was cut short from this side (the idle timeout or a shutdown closed the TLS
            # transport while it ran): the TLS layer then wakes aiosmtpd without an error and never
            # reports the connection lost, so the session would wait for a command forever, counted
            # and registered. End it as aiosmtpd does when the handshake fails.
            log.info("starttls handshake cut short", extra={"session": self.session_id})
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(None)

    async def _handle_client(self) -> None:
        peer = str(self.session.peer[0]) if self.session is not None else "?"
        if self._connect_rate is not None and not await self._connect_rate.allow(peer):
            self._stats.count(policy.TOO_MANY_CONNECTIONS)
            await self.push(str(policy.TOO_MANY_CONNECTIONS))
            self.transport.close()
            return
        await super()._handle_client()

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    async def push(self, status) -> None:
        """Queue one reply line; send the queue unless more pipelined commands are already waiting.

        RFC 2920 §3.1: a server may (and should, to save round trips and segments) hold the replies
        to a group of pipelined commands and send them together. A reply goes out at once (with all
        held before it) when no complete command line waits in the input buffer, when it is not a
        2xx (a 354/334 go-ahead the client waits for, an error that may precede a close), when it is
        220 (greeting, STARTTLS go-ahead) or 221 (closing), or when over 4 KiB are held. Continuation
        lines ("250-...") are always followed at once by the rest of their reply.
        """
        if isinstance(status, str):
            if not self._raw_reply:
                status = with_enhanced_code(status)
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        pending = self._pending
        pending += status
        pending += b"\r\n"
        if len(pending) <= _MAX_HELD_REPLIES and (
            status[3:4] == b"-"
            or (
                status[:1] == b"2"
                and status[:3] not in (b"220", b"221")
                and b"\n" in self._reader._buffer  # type: ignore[attr-defined]
            )
        ):
            return
        data = bytes(pending)
        pending.clear()
        self._writer.write(data)
        await self._writer.drain()

    def _flush_replies(self) -> None:
        """Write held replies now (no drain): before the connection is closed under them."""
        if self._pending and self.transport is not None and not self.transport.is_closing():
            data = bytes(self._pending)
            self._pending.clear()
            self._writer.write(data)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels and schedules a new timer for every command; move the deadline instead and
        # let the pending timer, when it fires early, re-arm itself for the deadline.
        loop = self.loop
        self._deadline = deadline = loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or self._timer_fired or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timer_fired = False
            self._timeout_handle = loop.call_at(deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._idle_timer)
            return
        self._timer_fired = True
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        self._flush_replies()
        super()._timeout_cb()

    def _getaddr(self, arg: str):
        # aiosmtpd parses every path with the email header parser (and defines a class per call).
        fast = fast_getaddr(arg) if arg else None
        if fast is not None and not (
            self.local_part_limit and len(fast[0].rpartition("@")[0]) > self.local_part_limit
        ):
            return fast
        return super()._getaddr(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the message in chunks instead of line by line.

        The checks before the 354 and the handling after the final dot are aiosmtpd's; the differences:
        lines longer than 1000 octets are accepted (as Postfix does) instead of refused with 500 5.5.6,
        and only CRLF "." CRLF ends the message (as before; see `whymail.smtp.data`).
        """
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return

        await self.push("354 End data with <CR><LF>.<CR><LF>")
        receiver = DataReceiver(self.data_size_limit)
        reader = self._reader
        try:
            while not receiver.done:
                try:
                    chunk = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:
                    # Over the reader's limit (1001 bytes) without a ".\r\n" (or before the first one):
                    # take what precedes it, which cannot be past the end of the message.
                    chunk = await reader.read(exc.consumed)
                if receiver.feed(chunk) != len(chunk):  # readuntil stops at the first ".\r\n"
                    raise RuntimeError("DATA read past the end of the message")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            # The client went away before the final dot: nothing is delivered. End the session the
            # way aiosmtpd does when the connection is lost (a cancellation, not an error to report).
            log.info("connection lost during DATA", extra={"session": self.session_id, "error": repr(exc)})
            self._writer.close()
            raise asyncio.CancelledError from None

        if receiver.too_big:
            # Answered only now that the client has sent everything (RFC 5321 §4.2.5).
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        original_content = receiver.content()
        content: str | bytes = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        self.envelope.content = content
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _getparams(self, params):
        # aiosmtpd checks SIZE with str.isdigit(), which "²" passes before int() raises on it (a 451 and a
        # traceback). RFC 1870 §3: size-value is 1*20 ASCII DIGIT; anything else is a syntax error (501).
        result = super()._getparams(params)
        size = result.get("SIZE") if result else None
        if isinstance(size, str) and not (size.isascii() and size.isdigit()):
            return None
        return result

    async def _greeting_reply(self, command, hostname: str) -> None:
        # RFC 2034 §3: no enhanced codes in the replies to EHLO/HELO (their syntax errors keep one).
        self._raw_reply = bool(hostname)
        try:
            await command(hostname)
        finally:
            self._raw_reply = False

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        await self._greeting_reply(super().smtp_EHLO, hostname)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        await self._greeting_reply(super().smtp_HELO, hostname)


def smtp_factory(
    config: Config,
    handler: InboundHandler,
    *,
    connections: ConnectionCounter,
    command_rate: TokenBuckets,
    registry: SessionRegistry,
    stats: SmtpStats,
    connect_rate: ConnectionRateLimiter | None = None,
    tls_context: ssl.SSLContext | None = None,
    submission: bool = False,
    implicit_tls: bool = False,
) -> Callable[[], WhyMailSMTP]:
    """A protocol factory for `loop.create_server`; STARTTLS is offered when `tls_context` is given.

    `submission`: AUTH is required before MAIL (and offered only over TLS unless
    `auth.allow_insecure_auth`); `implicit_tls`: the listener wraps connections in TLS itself (465).
    """
    smtp = config.server.smtp

    def make() -> WhyMailSMTP:
        return WhyMailSMTP(
            handler,
            connections=connections,
            command_rate=command_rate,
            registry=registry,
            stats=stats,
            connect_rate=connect_rate,
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=config.server.hostname,
            ident=smtp.banner,
            timeout=smtp.timeout,
            auth_require_tls=not (submission and config.auth.allow_insecure_auth),
            auth_required=submission,
            implicit_tls=implicit_tls,
            tls_context=None if implicit_tls else tls_context,
        )

    return make
