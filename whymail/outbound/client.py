"""The SMTP client: hand a batch of messages for one destination domain to a remote server.

`deliver` routes the domain (MX or smarthost), tries the hops in order until one takes a session, and
sends every message over that one connection. It never raises for remote trouble: each recipient ends
up delivered (2xx), deferred (4xx, or no usable answer) or failed (5xx), with the reply that decided it.
The caller (the DeliveryQueue) decides about retries and bounces.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiosmtplib import SMTP
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from whymail.config import RelayConfig
from whymail.dnsresolve import DnsResolver
from whymail.outbound.models import OutboundMessage, RecipientResult, Status
from whymail.outbound.routing import Hop, NoRoute, route
from whymail.smtp.replies import SmtpReply

log = logging.getLogger("whymail.outbound")

TlsContextFactory = Callable[[bool], ssl.SSLContext]
MessageId = str | int

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)", re.ASCII)
_QUIT_TIMEOUT = 5.0
# What a broken connection looks like through aiosmtplib: its own errors, socket errors (TLS ones
# included, ssl.SSLError is an OSError) and a reply line it cannot parse.
_CONNECTION_ERRORS = (SMTPServerDisconnected, SMTPTimeoutError, OSError, SMTPResponseException)


@functools.lru_cache(maxsize=2)
def client_tls_context(verify: bool) -> ssl.SSLContext:
    """TLS for talking to other servers: the system trust store when `verify`, no checks otherwise.

    Made once per process (loading the trust store blocks for a few milliseconds)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        # Opportunistic TLS (RFC 7435): encryption without authentication beats clear text.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def parse_reply(code: int, message: str) -> SmtpReply:
    """An aiosmtplib reply as code, enhanced status code (RFC 2034; class default when absent), text."""
    enhanced = ""
    lines = []
    for line in message.splitlines() or [""]:
        found = _ENHANCED.match(line)
        if found:
            enhanced = enhanced or found.group(1)
            line = line[found.end():]
        lines.append(line.strip())
    if not enhanced or enhanced[0] != str(code)[0]:
        enhanced = {"2": "2.0.0", "4": "4.0.0", "5": "5.0.0"}.get(str(code)[0], "")
    return SmtpReply(code, enhanced, " ".join(line for line in lines if line))


def _status(code: int) -> Status:
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "failed"
    return "deferred"  # 4xx, and anything odd that is not a definite answer


class _HopFailed(Exception):
    """The hop could not give us a usable session; `reply` says why, `permanent` for a 5xx refusal."""

    def __init__(self, reply: SmtpReply, permanent: bool = False, remote_host: str = "") -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.permanent = permanent
        self.remote_host = remote_host  # set when the reply came from that server


class _RetryInClear(Exception):
    """The opportunistic TLS handshake failed: reconnect to the same hop without STARTTLS."""


@dataclass(slots=True)
class _Session:
    smtp: SMTP
    hop: Hop
    tls: bool
    alive: bool = True

    @property
    def remote_host(self) -> str:
        return self.hop.host

    def extension(self, name: str) -> str | None:
        return self.smtp.esmtp_extensions.get(name.lower())


@dataclass(slots=True)
class _Options:
    relay: RelayConfig
    helo: str
    timeout: float
    tls_context_factory: TlsContextFactory
    contexts: dict[bool, ssl.SSLContext]

    def tls_context(self, verify: bool) -> ssl.SSLContext:
        if verify not in self.contexts:
            self.contexts[verify] = self.tls_context_factory(verify)
        return self.contexts[verify]


# --- opening a session -------------------------------------------------------------------------


async def _tcp_connect(hop: Hop, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in hop.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (hop.address, hop.port)), timeout)
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"timed out after {timeout:g}s") from None
    except OSError:
        sock.close()
        raise
    return sock


def _refused(hop: Hop, what: str, code: int, message: str) -> _HopFailed:
    reply = parse_reply(code, message)
    return _HopFailed(
        SmtpReply(reply.code, reply.enhanced, f"{hop.label} refused {what}: {reply.text}"),
        permanent=500 <= code < 600,
        remote_host=hop.host,
    )


async def _hello(smtp: SMTP, hop: Hop, helo: str) -> None:
    """EHLO, and HELO when the server does not know EHLO (RFC 5321 §4.1.1.1, §3.2)."""
    try:
        await smtp.ehlo(hostname=helo)
        return
    except SMTPHeloError as exc:
        if not smtp.is_connected or exc.code == 421:
            raise _refused(hop, "EHLO", exc.code, exc.message) from None
    try:
        await smtp.helo(hostname=helo)
    except SMTPHeloError as exc:
        raise _refused(hop, "HELO", exc.code, exc.message) from None


async def _starttls(smtp: SMTP, hop: Hop, options: _Options) -> bool:
    """Upgrade to TLS as the hop's policy asks; True when the session is now encrypted."""
    if not smtp.supports_extension("starttls"):
        if hop.tls == "starttls":
            raise _HopFailed(SmtpReply(451, "4.7.4", f"TLS is required, but {hop.label} does not offer STARTTLS"))
        return False
    try:
        await smtp.starttls(
            server_hostname=hop.host, tls_context=options.tls_context(hop.verify), timeout=options.timeout
        )
    except SMTPResponseException as exc:
        if hop.tls == "starttls" or exc.code == 421:
            raise _refused(hop, "STARTTLS", exc.code, exc.message) from None
        # RFC 3207 §4: after a refused STARTTLS the client may go on without TLS on the same session.
        return False
    except (ssl.SSLError, SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
        if hop.tls == "opportunistic":
            raise _RetryInClear from exc
        raise _HopFailed(SmtpReply(451, "4.7.5", f"TLS handshake with {hop.label} failed: {exc}")) from None
    # RFC 3207 §4.2: forget what was learnt before TLS and ask again.
    await _hello(smtp, hop, options.helo)
    return True


async def _authenticate(smtp: SMTP, hop: Hop, relay: RelayConfig) -> None:
    if not smtp.supports_extension("auth"):
        raise _HopFailed(SmtpReply(451, "4.7.8", f"authentication to {hop.label} failed: AUTH not offered"))
    try:
        await smtp.login(relay.username, relay.password)
    except SMTPAuthenticationError as exc:
        reply = parse_reply(exc.code, exc.message)
        raise _HopFailed(
            SmtpReply(451, "4.7.8", f"authentication to {hop.label} failed: {reply.code} {reply.enhanced} {reply.text}")
        ) from None
    except SMTPException as exc:  # no mechanism we both know
        raise _HopFailed(SmtpReply(451, "4.7.8", f"authentication to {hop.label} failed: {exc}")) from None


async def _open_once(hop: Hop, options: _Options, allow_starttls: bool) -> _Session:
    try:
        sock = await _tcp_connect(hop, options.timeout)
    except OSError as exc:
        raise _HopFailed(SmtpReply(451, "4.4.1", f"connection to {hop.label} failed: {exc}")) from None
    implicit = hop.tls == "implicit"
    smtp = SMTP(
        hostname=hop.host,
        sock=sock,
        local_hostname=options.helo,
        timeout=options.timeout,
        use_tls=implicit,
        start_tls=False,
        tls_context=options.tls_context(hop.verify) if implicit else None,
    )
    try:
        await smtp.connect()
    except SMTPConnectResponseError as exc:
        raise _refused(hop, "the connection", exc.code, exc.message) from None
    except (SMTPException, OSError) as exc:
        sock.close()
        raise _HopFailed(SmtpReply(451, "4.4.2", f"connection to {hop.label} failed: {exc}")) from None
    try:
        await _hello(smtp, hop, options.helo)
        tls = implicit
        if not implicit and allow_starttls:
            tls = await _starttls(smtp, hop, options)
        if hop.kind == "smarthost" and options.relay.username:
            await _authenticate(smtp, hop, options.relay)
    except (_HopFailed, _RetryInClear):
        smtp.close()
        raise
    except (SMTPException, OSError) as exc:
        smtp.close()
        raise _HopFailed(SmtpReply(451, "4.4.2", f"lost connection with {hop.label} during the greeting: {exc}")) from None
    return _Session(smtp, hop, tls)


async def _open_session(hop: Hop, options: _Options) -> _Session:
    try:
        return await _open_once(hop, options, allow_starttls=True)
    except _RetryInClear as exc:
        # RFC 7435 §1.3 / RFC 3207 §4.1: a failed opportunistic handshake must not stop delivery.
        log.info("TLS handshake with %s failed (%s); retrying without STARTTLS", hop.label, exc.__cause__)
        return await _open_once(hop, options, allow_starttls=False)


async def _close(session: _Session) -> None:
    if session.alive and session.smtp.is_connected:
        try:
            await session.smtp.quit(timeout=min(_QUIT_TIMEOUT, session.smtp.timeout or _QUIT_TIMEOUT))
        except (SMTPException, OSError):
            pass
    session.smtp.close()


# --- one transaction ---------------------------------------------------------------------------


def _bad_address(address: str) -> bool:
    return any(ch in "<> " or ord(ch) < 33 or ord(ch) == 127 for ch in address)


class _Transaction:
    """MAIL, RCPT…, DATA for one message on an open session, collecting a result per recipient."""

    def __init__(self, session: _Session, message: OutboundMessage) -> None:
        self.session = session
        self.message = message
        self.recipients = list(dict.fromkeys(message.recipients))
        self.results: dict[str, RecipientResult] = {}
        self.stage = "MAIL FROM"

    def settle(self, recipients: list[str], reply: SmtpReply, remote: bool = True) -> None:
        for rcpt in recipients:
            if rcpt not in self.results:
                self.results[rcpt] = RecipientResult(
                    recipient=rcpt,
                    status=_status(reply.code),
                    code=reply.code,
                    enhanced=reply.enhanced,
                    text=reply.text,
                    remote_host=self.session.remote_host if remote else "",
                )

    def open_recipients(self) -> list[str]:
        return [r for r in self.recipients if r not in self.results]

    async def command(self, *args: bytes) -> SmtpReply:
        response = await self.session.smtp.execute_command(*args)
        if response.code == 421:  # RFC 5321 §3.8: the server is closing the session
            self.session.alive = False
        return parse_reply(response.code, response.message)

    def _mail_parameters(self, utf8: bool) -> list[bytes]:
        params: list[bytes] = []
        if self.session.extension("size") is not None:
            params.append(b"SIZE=%d" % len(self.message.body))  # RFC 1870 §6
        if self.session.extension("8bitmime") is not None and not self.message.body.isascii():
            params.append(b"BODY=8BITMIME")  # RFC 6152 §3
        if utf8:
            params.append(b"SMTPUTF8")  # RFC 6531 §3.4
        return params

    def _precheck(self) -> bool:
        """Refuse locally what the server would refuse anyway; True when the message may go."""
        addresses = [self.message.sender, *self.recipients]
        if any(_bad_address(a) for a in addresses):
            bad = [r for r in self.recipients if _bad_address(r)]
            targets = self.recipients if _bad_address(self.message.sender) else bad
            self.settle(targets, SmtpReply(553, "5.1.3", "invalid address syntax"), remote=False)
            return not _bad_address(self.message.sender) and bool(self.open_recipients())
        limit = self.session.extension("size")
        if limit and limit.isdigit() and 0 < int(limit) < len(self.message.body):
            # RFC 1870 §6: do not send what the server said it will not take.
            text = f"message size {len(self.message.body)} exceeds size limit {limit} of {self.session.hop.label}"
            self.settle(self.recipients, SmtpReply(552, "5.3.4", text))
            return False
        if not all(a.isascii() for a in addresses) and self.session.extension("smtputf8") is None:
            text = f"{self.session.hop.label} does not support SMTPUTF8, needed for non-ASCII addresses"
            self.settle(self.recipients, SmtpReply(553, "5.6.7", text))  # RFC 6531 §3.2
            return False
        return True

    async def run(self) -> None:
        if not self._precheck():
            return
        utf8 = not all(a.isascii() for a in [self.message.sender, *self.recipients])
        encoding = "utf-8" if utf8 else "ascii"
        reply = await self.command(
            b"MAIL", b"FROM:<" + self.message.sender.encode(encoding) + b">", *self._mail_parameters(utf8)
        )
        if reply.code >= 300:
            self.settle(self.open_recipients(), reply)
            return
        accepted: list[str] = []
        self.stage = "RCPT TO"
        for rcpt in self.open_recipients():
            reply = await self.command(b"RCPT", b"TO:<" + rcpt.encode(encoding) + b">")
            if reply.code < 300:
                accepted.append(rcpt)
            else:
                self.settle([rcpt], reply)
            if not self.session.alive:
                self.settle(self.open_recipients(), reply)
                return
        if not accepted:
            await self.reset()
            return
        self.stage = "end of data"
        try:
            response = await self.session.smtp.data(self.message.body)
            reply = parse_reply(response.code, response.message)
        except SMTPDataError as exc:  # a 4xx/5xx to DATA itself or to the final dot
            reply = parse_reply(exc.code, exc.message)
            self.session.alive = self.session.alive and exc.code != 421
        self.settle(accepted, reply)
        if reply.code >= 300:
            await self.reset()

    async def reset(self) -> None:
        """RSET after an unfinished transaction, so the next one starts clean (RFC 5321 §4.1.1.5)."""
        if not self.session.alive:
            return
        response = await self.session.smtp.execute_command(b"RSET")
        if response.code != 250:
            self.session.alive = False


async def _send(session: _Session, message: OutboundMessage) -> list[RecipientResult]:
    transaction = _Transaction(session, message)
    try:
        await transaction.run()
    except _CONNECTION_ERRORS as exc:
        session.alive = False
        # Lost after the final dot means the server may have the message: deferring risks a
        # duplicate, which RFC 5321 §6.1 prefers to a loss.
        text = f"lost connection with {session.hop.label} while sending {transaction.stage}: {exc}"
        transaction.settle(transaction.open_recipients(), SmtpReply(451, "4.4.2", text))
    return [transaction.results[r] for r in transaction.recipients]


# --- the batch ---------------------------------------------------------------------------------


def _settle_all(
    message: OutboundMessage, status: Status, reply: SmtpReply, remote_host: str = ""
) -> list[RecipientResult]:
    return [
        RecipientResult(
            recipient=r, status=status, code=reply.code, enhanced=reply.enhanced, text=reply.text,
            remote_host=remote_host,
        )
        for r in dict.fromkeys(message.recipients)
    ]


_LOG_STATUS = {"delivered": "sent", "deferred": "deferred", "failed": "bounced"}


def _log_message(domain: str, message: OutboundMessage, results: list[RecipientResult], relay: str, tls: bool) -> None:
    """One line per message, Postfix style: to=, relay=, status= (reply); grouped when they differ."""
    groups: dict[tuple[str, str], list[str]] = {}
    for result in results:
        groups.setdefault((result.status, result.reply), []).append(result.recipient)
    parts = [
        "to=" + ",".join(f"<{r}>" for r in rcpts) + f" status={_LOG_STATUS[status]} ({reply})"
        for (status, reply), rcpts in groups.items()
    ]
    log.info(
        "id=%s from=<%s> domain=%s relay=%s tls=%s %s",
        message.id, message.sender, domain, relay or "none", "yes" if tls else "no", "; ".join(parts),
        extra={"message_id": str(message.id), "domain": domain, "relay": relay},
    )


async def deliver(
    domain: str,
    messages: list[OutboundMessage],
    *,
    resolver: DnsResolver,
    relay: RelayConfig,
    helo: str,
    timeout: float,
    tls_context_factory: TlsContextFactory = client_tls_context,
    rng: random.Random | None = None,
    on_message: Callable[[MessageId, list[RecipientResult]], Awaitable[None]] | None = None,
) -> dict[MessageId, list[RecipientResult]]:
    """Send `messages` (all for `domain`) over one connection; per message, one result per recipient.

    `timeout` bounds the connect and every reply wait. `tls_context_factory(verify)` makes the client
    TLS contexts (tests pass one that trusts their sink); `rng` orders equal-preference MX hosts.
    `on_message` is awaited after each message a server answered, before the next one is sent, so
    the caller can commit the answers (a crash after that never sends those recipients again).
    """
    if not helo.strip():
        raise ValueError("deliver needs a HELO name")
    results: dict[MessageId, list[RecipientResult]] = {}
    if not messages:
        return results
    try:
        hops = await route(domain, resolver, relay, rng=rng)
    except NoRoute as exc:
        status: Status = "failed" if exc.permanent else "deferred"
        for message in messages:
            results[message.id] = _settle_all(message, status, SmtpReply(exc.code, exc.enhanced, exc.text))
            _log_message(domain, message, results[message.id], "", False)
        return results

    options = _Options(relay, helo, timeout, tls_context_factory, {})
    pending = deque(messages)
    last_failure = _HopFailed(SmtpReply(451, "4.4.1", f"no server for {domain} could be reached"))
    index = 0
    while pending and index < len(hops):
        hop = hops[index]
        try:
            session = await _open_session(hop, options)
        except _HopFailed as exc:
            log.info("domain=%s relay=%s unusable: %s", domain, hop.label, exc.reply, extra={"domain": domain})
            last_failure = exc
            index += 1
            continue
        try:
            # One connection carries every message while it lasts.
            while pending and session.alive:
                message = pending.popleft()
                results[message.id] = await _send(session, message)
                _log_message(domain, message, results[message.id], hop.label, session.tls)
                if on_message is not None:
                    await on_message(message.id, results[message.id])
        finally:
            await _close(session)
        if pending:
            last_failure = _HopFailed(SmtpReply(451, "4.4.2", f"connection to {hop.label} was closed"))
            # A server that ends the session after some messages (421, a per-connection limit) gets
            # a fresh connection for the rest, and the next hop when that fails. Every session takes
            # at least one message off `pending`, so this ends.
    # RFC 5321 §5.1 asks to try the other addresses; like Postfix, a 5xx greeting is only final when
    # it comes from the last server on the list (an earlier one may be a broken or overloaded MX).
    status = "failed" if last_failure.permanent else "deferred"
    for message in pending:
        results[message.id] = _settle_all(message, status, last_failure.reply, last_failure.remote_host)
        _log_message(domain, message, results[message.id], "", False)
    return {message.id: results[message.id] for message in messages}
