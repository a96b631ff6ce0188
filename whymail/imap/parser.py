"""Incremental IMAP command reading (RFC 3501 §2.2, RFC 7888 LITERAL+), h11 style.

`CommandReader` is fed the bytes a client sends and hands back events: a parsed command, a request
to send `+ Ready` for a synchronising literal, a raw line (AUTHENTICATE), the end of IDLE, or a
parse error. It never raises and never holds more than one line plus one command's literals,
whatever the client sends; after an error it resynchronises at the end of the offending command.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from whymail.imap.commands import Command
from whymail.imap.errors import ImapParseError
from whymail.imap.grammar import parse_command

__all__ = [
    "CommandEvent",
    "CommandReader",
    "ContinuationNeeded",
    "IdleDone",
    "LineEvent",
    "ParseErrorEvent",
    "ReaderEvent",
    "parse_command",
]

DEFAULT_MAX_LINE = 64 * 1024
DEFAULT_MAX_LITERAL = 64 * 1024
DEFAULT_MAX_APPEND_LITERAL = 50 * 1024 * 1024

_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,20})(\+?)\}\Z")
_TAG_AT_START = re.compile(rb"\A([\x21-\x7e]{1,64}?) ([A-Za-z]+)(?: ([A-Za-z]+))?")
_TAIL_KEEP = 32  # bytes of a discarded over-long line kept to spot a literal header at its end


@dataclass(frozen=True, slots=True)
class CommandEvent:
    command: Command


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """A synchronising literal `{size}` was announced: send `+ Ready` so the client sends it."""

    tag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class ParseErrorEvent:
    """Answer `tag BAD text` (or `* BAD` without a tag); the reader is ready for the next command."""

    error: ImapParseError


@dataclass(frozen=True, slots=True)
class LineEvent:
    """A raw line (without CRLF) read after `expect_line()`, e.g. a SASL response."""

    line: bytes


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The client ended IDLE with `DONE` (RFC 2177)."""


ReaderEvent = CommandEvent | ContinuationNeeded | ParseErrorEvent | LineEvent | IdleDone


class CommandReader:
    """Turns client bytes into reader events; see the module docstring."""

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        max_append_literal: int = DEFAULT_MAX_APPEND_LITERAL,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_append_literal = max_append_literal
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for LF, so trickled input is not rescanned
        self._mode = "command"  # or "idle" (expect DONE) or "line" (expect one raw line)
        self._reset_command()
        self._discarding_line = False
        self._tail = b""

    def _reset_command(self) -> None:
        self._parts: list[bytes] = []
        self._line_len = 0  # bytes of the command outside literals
        self._literal_total = 0
        self._literal_remaining = 0
        self._keep_literal = True
        self._aborted = False  # an error was already reported for the current command
        self._tag: str | None = None
        self._is_append = False

    @property
    def buffered_size(self) -> int:
        """Bytes held: unread input plus the command being assembled (for memory accounting)."""
        return len(self._buf) + sum(len(p) for p in self._parts) + len(self._tail)

    def expect_idle_done(self) -> None:
        """After an IDLE command: the next line must be `DONE` (yields IdleDone or an error)."""
        self._mode = "idle"

    def expect_line(self) -> None:
        """After an AUTHENTICATE challenge: the next line is returned raw as a LineEvent."""
        self._mode = "line"

    def feed(self, data: bytes) -> Iterator[ReaderEvent]:
        """Buffer `data` and iterate over the events now available.

        The iterator is lazy, so a mode switch (`expect_idle_done`, `expect_line`) made while handling
        one event applies to the bytes that follow it. Unconsumed events stay buffered.
        """
        self._buf += data
        return self._drain()

    def _drain(self) -> Iterator[ReaderEvent]:
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> ReaderEvent | None:
        """The next event, or None when more data is needed."""
        while True:
            if self._literal_remaining:
                if not self._consume_literal():
                    return None
                continue
            newline = self._buf.find(b"\n", self._scanned)
            if newline < 0:
                self._scanned = len(self._buf)
                return self._wait_for_line()
            segment = bytes(self._buf[:newline])
            del self._buf[: newline + 1]
            self._scanned = 0
            if segment.endswith(b"\r"):
                segment = segment[:-1]
            if self._discarding_line:
                self._discarding_line = False
                self._finish_aborted(self._tail + segment)
                self._tail = b""
                continue
            event = self._handle_segment(segment)
            if event is not None:
                return event

    def _consume_literal(self) -> bool:
        take = min(self._literal_remaining, len(self._buf))
        if self._keep_literal and take:
            self._parts.append(bytes(self._buf[:take]))
        del self._buf[:take]
        self._scanned = 0
        self._literal_remaining -= take
        return self._literal_remaining == 0

    def _wait_for_line(self) -> ReaderEvent | None:
        if self._discarding_line:
            self._tail = (self._tail + bytes(self._buf))[-_TAIL_KEEP:]
            self._buf.clear()
            self._scanned = 0
            return None
        if self._line_len + len(self._buf) <= self.max_line:
            return None
        # RFC 3501 does not bound lines; we do, and skip the rest of this one.
        if not self._parts:
            self._note_command_start(bytes(self._buf[:200]))
        self._tail = bytes(self._buf[-_TAIL_KEEP:])
        self._buf.clear()
        self._scanned = 0
        self._discarding_line = True
        return self._abort(ImapParseError("command line too long", self._tag))

    def _abort(self, error: ImapParseError) -> ReaderEvent | None:
        """Report `error` once for the current command; its remaining bytes are then skipped."""
        self._mode = "command"
        if self._aborted:
            return None
        self._aborted = True
        return ParseErrorEvent(error)

    def _handle_segment(self, segment: bytes) -> ReaderEvent | None:
        if self._aborted:
            self._finish_aborted(segment)
            return None
        if self._mode != "command" and not self._parts:
            return self._special_line(segment)
        if not self._parts and not segment:
            return None  # tolerate empty lines between commands
        if not self._parts:
            self._note_command_start(segment)
        if self._line_len + len(segment) > self.max_line:
            event = self._abort(ImapParseError("command line too long", self._tag))
            self._finish_aborted(segment)
            return event
        literal = _LITERAL_AT_END.search(segment)
        if literal is None:
            self._parts.append(segment)
            data = b"".join(self._parts)
            self._reset_command()
            try:
                return CommandEvent(parse_command(data))
            except ImapParseError as exc:
                return ParseErrorEvent(exc)
        size, synchronising = int(literal.group(1)), not literal.group(2)
        limit = self.max_append_literal if self._is_append else self.max_literal
        if self._literal_total + size > limit:
            event = self._abort(ImapParseError("literal is too large", self._tag, code="TOOBIG"))
            self._finish_aborted(segment)
            return event
        self._parts.append(segment + b"\r\n")
        self._line_len += len(segment)
        self._literal_total += size
        self._literal_remaining = size
        self._keep_literal = True
        return ContinuationNeeded(self._tag, size) if synchronising else None

    def _finish_aborted(self, segment: bytes) -> None:
        """Skip what is left of an aborted command after this line segment."""
        literal = _LITERAL_AT_END.search(segment)
        if literal is None or not literal.group(2):
            # End of the command; for a synchronising literal the client waits for a `+` that
            # never comes, having seen our BAD (RFC 3501 §7.5), so the command is over too.
            self._reset_command()
            return
        # RFC 7888 §4: a non-synchronising literal is sent anyway, so read and drop its bytes.
        self._parts = []
        self._aborted = True
        self._literal_remaining = int(literal.group(1))
        self._keep_literal = False

    def _special_line(self, segment: bytes) -> ReaderEvent:
        mode, self._mode = self._mode, "command"
        if len(segment) > self.max_line:
            return ParseErrorEvent(ImapParseError("line too long"))
        if mode == "line":
            return LineEvent(segment)
        if segment.strip().upper() == b"DONE":
            return IdleDone()
        return ParseErrorEvent(ImapParseError("expected DONE to end IDLE"))

    def _note_command_start(self, start: bytes) -> None:
        match = _TAG_AT_START.match(start)
        if match is None:
            return
        self._tag = match.group(1).decode("ascii")
        name = match.group(2).upper()
        self._is_append = name == b"APPEND"
