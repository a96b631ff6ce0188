"""One IMAP connection over asyncio streams: bytes in -> CommandReader -> Session -> encoder -> bytes out.

This is the thin I/O shell around the sans-I/O core (no Ray here either): it owns the socket, the
STARTTLS upgrade, literal continuations, the AUTHENTICATE exchange, IDLE (waiting for changes and
for DONE at once) and the autologout timer (RFC 3501 §5.4: at least 30 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Iterator

from whymail.imap import commands as cmds
from whymail.imap.encoder import encode_response
from whymail.imap.parser import (
    DEFAULT_MAX_APPEND_LITERAL,
    CommandEvent,
    CommandReader,
    ContinuationNeeded,
    IdleDone,
    LineEvent,
    ParseErrorEvent,
    ReaderEvent,
)
from whymail.imap.responses import Continuation, Tagged, Untagged

log = logging.getLogger("whymail.imap")

READ_SIZE = 64 * 1024
IDLE_POLL = 25.0
PREAUTH_MAX_LITERAL = 8 * 1024  # APPEND literal a client may announce before it logged in  # seconds one wait_changes call may last before it is renewed


class ImapConnection:
    """Serves one client until LOGOUT, disconnect or autologout."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session,  # whymail.imap.session.Session
        *,
        tls_context: ssl.SSLContext | None,
        idle_timeout: float = 1800.0,
        greeting: str = "WhyMail IMAP4rev1 ready",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._session = session
        self._tls_context = tls_context
        self._idle_timeout = idle_timeout
        self._greeting = greeting
        # Before login a client may not make us buffer a large APPEND literal (RFC 7888 §4).
        self._commands = CommandReader(max_append_literal=PREAUTH_MAX_LITERAL)
        self._authenticated = False
        self._closing = False
        self.session_id = uuid.uuid4().hex[:12]

    async def _send(self, responses) -> None:
        # One write per command: a LIST of N mailboxes is one send, not N+1.
        self._writer.write(b"".join(encode_response(response) for response in responses))
        if any(isinstance(r, Untagged) and r.status == "BYE" for r in responses):
            self._closing = True
        # A client that stops reading must not pin our memory forever.
        await asyncio.wait_for(self._writer.drain(), timeout=self._idle_timeout)

    async def _read(self) -> bytes:
        return await asyncio.wait_for(self._reader.read(READ_SIZE), timeout=self._idle_timeout)

    async def run(self) -> None:
        """Greet, then serve commands; never raises (errors end this connection only)."""
        try:
            await self._send([Untagged("OK", self._greeting)])
            while not self._closing:
                try:
                    data = await self._read()
                except TimeoutError:
                    await self._send([Untagged("BYE", "Autologout; idle for too long")])
                    break
                if not data:
                    break
                await self._process(self._commands.feed(data))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError) as exc:
            log.info("imap connection ended: %r", exc, extra={"session_id": self.session_id})
        except Exception:
            log.exception("imap connection failed", extra={"session_id": self.session_id})
            with contextlib.suppress(Exception):
                await self._send([Untagged("BYE", "Internal server error")])
        finally:
            with contextlib.suppress(Exception):
                self._writer.close()

    async def _process(self, events: Iterator[ReaderEvent]) -> None:
        reader = self._commands
        for event in events:
            if self._closing or self._commands is not reader:
                # After STARTTLS the reader was replaced: what the old one still holds came in clear
                # text before the handshake and is dropped, never executed (RFC 3501 §6.2.1).
                return
            if isinstance(event, ContinuationNeeded):
                await self._send([Continuation("Ready for literal data")])
            elif isinstance(event, ParseErrorEvent):
                await self._send(self._session.parse_error(event.error))
            elif isinstance(event, LineEvent):
                await self._send(await self._session.continue_authenticate(event.line))
                if self._session.awaiting_continuation:
                    self._commands.expect_line()
            elif isinstance(event, IdleDone):
                await self._send([Untagged("BAD", "DONE without IDLE")])
            elif isinstance(event, CommandEvent):
                await self._command(event.command, events)

    async def _command(self, command, events: Iterator[ReaderEvent]) -> None:
        if isinstance(command, cmds.Idle):
            await self._idle(command, events)
            return
        responses = await self._session.handle(command)
        if isinstance(command, cmds.StartTls) and _ok(responses) and self._tls_context is not None:
            await self._start_tls(responses)
            return
        await self._send(responses)
        if not self._authenticated and self._session.account is not None:
            self._authenticated = True
            self._commands.max_append_literal = DEFAULT_MAX_APPEND_LITERAL
        if isinstance(command, cmds.Authenticate) and self._session.awaiting_continuation:
            self._commands.expect_line()

    async def _start_tls(self, responses) -> None:
        # RFC 3501 §6.2.1 / RFC 7817: nothing may follow STARTTLS before the client has our OK.
        # Bytes already here were sent blind, in clear text, and would otherwise be read as if they
        # came over TLS (command injection): such a client is disconnected instead.
        if self._commands.buffered_size or len(getattr(self._reader, "_buffer", b"")):
            tag = responses[-1].tag
            await self._send([Tagged(tag, "BAD", "data sent after STARTTLS"), Untagged("BYE", "Closing")])
            self._closing = True
            return
        self._commands = CommandReader(max_append_literal=self._commands.max_append_literal)
        # No await between the OK and the upgrade: start_tls drains and pauses reading at once, so
        # the client's TLS hello cannot land in the clear-text buffer meanwhile.
        self._writer.write(b"".join(encode_response(r) for r in responses))
        await self._writer.start_tls(self._tls_context)
        self._session.tls_started()

    async def _idle(self, command, events: Iterator[ReaderEvent]) -> None:
        responses = await self._session.handle(command)
        await self._send(responses)
        if not any(isinstance(r, Continuation) for r in responses):
            return  # refused (wrong state): the tagged NO/BAD was sent
        self._commands.expect_idle_done()
        # DONE may already be buffered behind IDLE.
        for event in events:
            if isinstance(event, IdleDone):
                await self._send(await self._session.idle_done())
                return
            await self._process(iter([event]))
            return
        reading = asyncio.ensure_future(self._read())
        waiting = asyncio.ensure_future(self._session.idle_wait(IDLE_POLL))
        try:
            while True:
                done, _ = await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
                if waiting in done:
                    updates = waiting.result()
                    await self._send(updates)
                    if not updates:
                        await asyncio.sleep(0.05)  # never spin if waiting returns at once
                    waiting = asyncio.ensure_future(self._session.idle_wait(IDLE_POLL))
                if reading in done:
                    try:
                        data = reading.result()
                    except TimeoutError:
                        await self._send([Untagged("BYE", "Autologout; idle for too long")])
                        return
                    if not data:
                        self._closing = True
                        return
                    more = self._commands.feed(data)
                    for event in more:
                        if isinstance(event, IdleDone):
                            if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
                                await self._send(waiting.result())  # already applied to the view: send
                            else:
                                waiting.cancel()
                            await self._send(await self._session.idle_done())
                            await self._process(more)
                            return
                        await self._process(iter([event]))  # a bad line ends IDLE with BAD
                        await self._process(more)
                        return
                    reading = asyncio.ensure_future(self._read())
        finally:
            for task in (reading, waiting):
                task.cancel()


def _ok(responses) -> bool:
    return bool(responses) and isinstance(responses[-1], Tagged) and responses[-1].status == "OK"
