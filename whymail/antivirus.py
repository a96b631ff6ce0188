"""Virus scanning with clamd over its INSTREAM protocol, and the SMTP answer a scan result calls for.

The exchange (man clamd): the client sends `zINSTREAM\\0`, then the message as chunks, each prefixed
by its length as 4 bytes in network order, and a zero-length chunk to end it. clamd answers one
NUL-terminated line: `stream: OK`, `stream: <signature> FOUND`, or `<reason> ERROR` (for example
`INSTREAM size limit exceeded. ERROR` once StreamMaxLength is passed, after which it hangs up).

A scanner problem is never an exception for the caller: `scan` returns a result with status "error"
and a detail for the log, and `scan_decision` turns it into a temporary failure or an accepted,
marked message, as `antivirus.on_error` says.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Literal

from whymail.config import AntivirusConfig
from whymail.smtp.replies import SmtpReply

ScanStatus = Literal["clean", "infected", "error"]

VIRUS_HEADER = "X-Virus-Scanned"
DEFAULT_CHUNK_SIZE = 64 * 1024
_MAX_REPLY = 4096  # a clamd reply is one short line; more than this is not clamd
_END_OF_STREAM = struct.pack(">I", 0)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What clamd said about one message: `signature` is set when infected, `detail` on error."""

    status: ScanStatus
    signature: str = ""
    detail: str = ""

    @classmethod
    def clean(cls) -> ScanResult:
        return cls("clean")

    @classmethod
    def infected(cls, signature: str) -> ScanResult:
        return cls("infected", signature=signature)

    @classmethod
    def error(cls, detail: str) -> ScanResult:
        return cls("error", detail=detail)


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """Where clamd listens: a Unix socket path, or a TCP host and port."""

    unix_path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.unix_path:
            return f"unix:{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_clamd_address(spec: str) -> ClamdAddress:
    """Parse `host:port`, `[v6]:port`, `/path/to/clamd.sock` or `unix:/path`; ValueError otherwise."""
    spec = spec.strip()
    if spec.startswith("unix:"):
        path = spec.removeprefix("unix:")
        if not path:
            raise ValueError("clamd socket 'unix:' needs a path")
        return ClamdAddress(unix_path=path)
    if spec.startswith("/"):
        return ClamdAddress(unix_path=spec)
    if spec.startswith("["):
        host, bracket, port = spec[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise ValueError(f"clamd address {spec!r}: expected [v6-address]:port")
        port = port[1:]
    else:
        host, colon, port = spec.partition(":")
        if not colon or ":" in port:
            raise ValueError(f"clamd address {spec!r}: expected host:port, [v6]:port or a socket path")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"clamd address {spec!r}: expected host:port with a port from 1 to 65535")
    return ClamdAddress(host=host, port=int(port))


def parse_clamd_reply(raw: bytes) -> ScanResult:
    """Turn clamd's NUL-terminated INSTREAM answer into a result."""
    text = raw.rstrip(b"\0").decode("utf-8", "replace").strip()
    answer = text.removeprefix("stream:").strip()
    if answer == "OK":
        return ScanResult.clean()
    if answer.endswith(" FOUND") and answer[:-6].strip():
        return ScanResult.infected(answer[:-6].strip())
    if answer.endswith(" ERROR"):
        return ScanResult.error(f"clamd: {answer[:-6].strip()}")
    return ScanResult.error(f"unexpected reply from clamd: {text[:200]!r}")


class ClamdScanner:
    """An asyncio clamd client: one connection per scan, everything bounded by `timeout` seconds."""

    def __init__(self, socket_spec: str, timeout: float, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if timeout <= 0 or chunk_size <= 0:
            raise ValueError("timeout and chunk_size must be positive")
        self.address = parse_clamd_address(socket_spec)
        self.timeout = timeout
        self.chunk_size = chunk_size

    async def scan(self, data: bytes) -> ScanResult:
        """Scan one message; clamd being down, slow or confused gives status "error", never an exception."""
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._instream(data)
        except TimeoutError:  # before OSError: TimeoutError is one of its subclasses
            return ScanResult.error(f"clamd at {self.address} timed out after {self.timeout:g}s")
        except asyncio.IncompleteReadError:
            return ScanResult.error(f"clamd at {self.address} closed the connection without a reply")
        except asyncio.LimitOverrunError:
            return ScanResult.error(f"unexpected reply from clamd at {self.address}: no end of line")
        except (BrokenPipeError, ConnectionResetError) as exc:  # connected, then cut off
            return ScanResult.error(f"clamd at {self.address} dropped the connection: {exc.strerror or exc}")
        except OSError as exc:
            return ScanResult.error(f"clamd unreachable at {self.address}: {exc.strerror or exc}")
        return parse_clamd_reply(reply)

    async def ping(self) -> bool:
        """True when clamd answers PING with PONG within the timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect()
                try:
                    writer.write(b"zPING\0")
                    await writer.drain()
                    return await reader.readuntil(b"\0") == b"PONG\0"
                finally:
                    writer.transport.abort()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.unix_path:
            return await asyncio.open_unix_connection(self.address.unix_path, limit=_MAX_REPLY)
        return await asyncio.open_connection(self.address.host, self.address.port, limit=_MAX_REPLY)

    async def _instream(self, data: bytes) -> bytes:
        reader, writer = await self._connect()
        # The reply is awaited while the chunks go out: past StreamMaxLength clamd answers and hangs up
        # mid-stream, and that answer must be read rather than lost behind a broken pipe.
        sender = asyncio.create_task(self._send_chunks(writer, data))
        try:
            return await reader.readuntil(b"\0")
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            # Nothing is left to say after the reply; abort never waits on a peer that stopped reading.
            writer.transport.abort()

    async def _send_chunks(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"zINSTREAM\0")
        view = memoryview(data)
        for start in range(0, len(view), self.chunk_size):
            chunk = view[start : start + self.chunk_size]
            writer.write(struct.pack(">I", len(chunk)))
            writer.write(chunk)
            await writer.drain()
        writer.write(_END_OF_STREAM)
        await writer.drain()


def from_config(config: AntivirusConfig) -> ClamdScanner | None:
    """The scanner the config asks for, or None when antivirus scanning is disabled."""
    if not config.enabled:
        return None
    return ClamdScanner(config.clamav_socket, config.timeout)


@dataclass(frozen=True, slots=True)
class ScanDecision:
    """Reject or defer with `reply`, or accept (reply None) and add `header` (name, value) to the message."""

    reply: SmtpReply | None = None
    header: tuple[str, str] | None = None

    @property
    def accept(self) -> bool:
        return self.reply is None


def scan_decision(result: ScanResult, on_error: str, hostname: str) -> ScanDecision:
    """The SMTP answer for a scan result; `on_error` is "tempfail" or "accept" (antivirus.on_error)."""
    if on_error not in ("tempfail", "accept"):
        raise ValueError(f"on_error must be tempfail or accept, not {on_error!r}")
    if result.status == "infected":
        return ScanDecision(
            reply=SmtpReply(554, "5.7.1", f"Message rejected: virus found ({_reply_safe(result.signature)})")
        )
    if result.status == "error":
        if on_error == "tempfail":
            return ScanDecision(reply=SmtpReply(451, "4.7.1", "Virus scanner unavailable, try again later"))
        return ScanDecision(header=(VIRUS_HEADER, "unavailable"))
    return ScanDecision(header=(VIRUS_HEADER, f"clamav ({hostname})"))


def _reply_safe(signature: str, limit: int = 200) -> str:
    # A reply line is ASCII with no CR/LF; the signature name comes from a database we do not write.
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in signature).strip()
    return cleaned[:limit] or "unknown"
