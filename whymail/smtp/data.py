"""The SMTP DATA stream, without I/O: find the end of the message and undo the dot-stuffing.

RFC 5321 §4.1.1.4: the message ends at the first CRLF "." CRLF, the CRLF that ends the DATA command
counting as the first CRLF (so a lone "." right away is an empty message). Only that exact sequence
ends it: a bare LF "." LF, CR "." CR or LF "." CRLF is message content (SMTP smuggling, CVE-2023-51766).
§4.5.2: the client doubles the first "." of every line that begins with one; the server deletes it.

`DataReceiver` is fed the stream in chunks of any size (the terminator may straddle chunks) and tells
how many bytes of each chunk belong to the message, so that the caller never consumes what follows
the terminator (a pipelined next command). Past `limit` bytes it stops keeping data but goes on
looking for the terminator, so that the client gets its 552 reply only once it has finished sending.
"""

from __future__ import annotations

TERMINATOR = b"\r\n.\r\n"
_TAIL = len(TERMINATOR) - 1  # bytes of the stream kept to find a terminator that straddles chunks


class DataReceiver:
    """Accumulates one message from the DATA stream; see the module docstring."""

    __slots__ = ("limit", "size", "done", "too_big", "_parts", "_tail")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or None  # None or 0: no limit (aiosmtpd's data_size_limit semantics)
        self.size = 0  # bytes of the stream fed so far, dot-stuffed, terminator included
        self.done = False  # the terminator has been seen
        self.too_big = False  # the dot-stuffed content exceeds `limit`: nothing is kept
        self._parts: list[bytes] = []
        self._tail = b"\r\n"  # the CRLF that ended the DATA command

    def feed(self, chunk: bytes) -> int:
        """Take the next bytes of the stream; return how many belong to the message.

        That is len(chunk) unless the terminator ends inside `chunk`, in which case it is the offset
        just past it and `done` is now True. Feeding after `done` is an error.
        """
        if self.done:
            raise ValueError("the message has already ended")
        if not chunk:
            return 0
        # A terminator that starts in the tail of the previous chunks ends in the first 4 bytes here.
        boundary = self._tail + chunk[:_TAIL]
        at = boundary.find(TERMINATOR)
        if at != -1:
            end = at + len(TERMINATOR) - len(self._tail)
        else:
            at = chunk.find(TERMINATOR)
            end = -1 if at == -1 else at + len(TERMINATOR)
        if end != -1:
            self.done = True
            chunk = chunk[:end]
        self.size += len(chunk)
        if not self.too_big:
            # The dot-stuffed content is the stream without its final ".\r\n", so it is at least
            # size - 3 bytes long (exactly that once done): past the limit, keeping more is pointless.
            if self.limit is not None and self.size - 3 > self.limit:
                self.too_big = True
                self._parts.clear()
            else:
                self._parts.append(chunk)
        self._tail = chunk[-_TAIL:] if len(chunk) >= _TAIL else (self._tail + chunk)[-_TAIL:]
        return len(chunk)

    def content(self) -> bytes:
        """The message as sent before dot-stuffing: every line with its CRLF, without the final dot."""
        if not self.done:
            raise ValueError("the message has not ended yet")
        if self.too_big:
            raise ValueError("the message exceeded the size limit and was discarded")
        data = b"".join(self._parts)
        self._parts.clear()
        return unstuff(data[:-3])


def unstuff(stuffed: bytes) -> bytes:
    """Undo RFC 5321 §4.5.2 transparency: delete the first "." of every line that begins with "."."""
    if stuffed[:1] == b".":
        stuffed = stuffed[1:]
    return stuffed.replace(b"\r\n.", b"\r\n")
