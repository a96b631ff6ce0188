"""The clamd client against a real clamd (tests/support/clamd.py), its failure modes, and the SMTP decision."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.support.clamd import EICAR, EICAR_SIGNATURE_PREFIX, ClamdServer
from whymail.antivirus import (
    VIRUS_HEADER,
    ClamdAddress,
    ClamdScanner,
    ScanResult,
    from_config,
    parse_clamd_address,
    parse_clamd_reply,
    scan_decision,
)
from whymail.config import AntivirusConfig
from whymail.smtp.replies import SmtpReply


def _message(body: bytes, subject: str = "hello") -> bytes:
    head = f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\n".encode()
    return head + body


def _with_attachment(payload: bytes, filename: str = "eicar.com") -> bytes:
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="part-boundary"\r\n\r\n'
        b"--part-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.\r\n"
        b"--part-boundary\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="' + filename.encode() + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--part-boundary--\r\n"
    )


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _fake_clamd(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def scanner(clamd: ClamdServer) -> AsyncIterator[ClamdScanner]:
    yield ClamdScanner(clamd.tcp_address, timeout=10)


# --- against the real clamd -------------------------------------------------------------------------


async def test_clean_message_is_clean(scanner: ClamdScanner) -> None:
    result = await scanner.scan(_message(b"Lunch at noon?\r\n" * 100))
    assert result == ScanResult("clean")


async def test_eicar_typed_into_a_plain_body_is_infected(scanner: ClamdScanner) -> None:
    result = await scanner.scan(_message(b"Before the test string:\r\n" + EICAR + b"\r\nafter it.\r\n"))
    assert result.status == "infected"
    assert result.signature.startswith(EICAR_SIGNATURE_PREFIX)
    assert result.detail == ""


async def test_eicar_base64_attachment_is_found_only_by_decoding_the_mime_part(scanner: ClamdScanner) -> None:
    message = _with_attachment(EICAR)
    assert EICAR not in message  # the raw stream holds only base64: clamd must decode (ScanMail yes)
    result = await scanner.scan(message)
    assert result.status == "infected"
    assert result.signature.startswith(EICAR_SIGNATURE_PREFIX)


async def test_base64_attachment_without_a_virus_is_clean(scanner: ClamdScanner) -> None:
    assert await scanner.scan(_with_attachment(b"quarterly figures " * 50, "report.bin")) == ScanResult("clean")


async def test_bare_eicar_file_is_infected(scanner: ClamdScanner) -> None:
    result = await scanner.scan(EICAR)
    assert result.status == "infected" and result.signature.startswith(EICAR_SIGNATURE_PREFIX)


async def test_tiny_chunks_split_the_signature_and_clamd_still_finds_it(clamd: ClamdServer) -> None:
    scanner = ClamdScanner(clamd.tcp_address, timeout=10, chunk_size=7)
    result = await scanner.scan(_with_attachment(EICAR))
    assert result.status == "infected"


async def test_empty_message_is_clean(scanner: ClamdScanner) -> None:
    assert await scanner.scan(b"") == ScanResult("clean")


# Far past the limit the client is still writing when clamd answers and hangs up: the reply must be
# read while sending, or it is lost behind a reset connection.
@pytest.mark.parametrize("excess", [1, 1024 * 1024, 64 * 1024 * 1024])
async def test_stream_longer_than_stream_max_length_is_a_size_limit_error(
    clamd: ClamdServer, scanner: ClamdScanner, excess: int
) -> None:
    result = await scanner.scan(b"A" * (clamd.stream_max_length + excess))
    assert result.status == "error"
    if excess < 1024 * 1024:
        assert "size limit" in result.detail
    else:
        # Far past the limit, clamd's reset can overtake its answer on a busy machine (the kernel drops
        # unread data on RST); either way the scan is an error, which is what the SMTP decision needs.
        assert "size limit" in result.detail or "dropped the connection" in result.detail, result.detail
    assert await scanner.ping()  # clamd is fine afterwards


async def test_unix_socket_path_and_unix_prefix_both_scan(clamd: ClamdServer) -> None:
    for spec in (clamd.unix_path, f"unix:{clamd.unix_path}"):
        scanner = ClamdScanner(spec, timeout=10)
        assert scanner.address == ClamdAddress(unix_path=clamd.unix_path)
        assert await scanner.ping()
        assert (await scanner.scan(_message(b"fine\r\n"))).status == "clean"
        assert (await scanner.scan(_with_attachment(EICAR))).status == "infected"


async def test_concurrent_scans_each_get_their_own_answer(scanner: ClamdScanner) -> None:
    messages = [_message(b"plain text\r\n") if i % 2 else _with_attachment(EICAR) for i in range(12)]
    results = await asyncio.gather(*(scanner.scan(m) for m in messages))
    assert [r.status for r in results] == ["infected" if i % 2 == 0 else "clean" for i in range(12)]


async def test_stopped_clamd_gives_error_then_recovers_when_started(clamd: ClamdServer) -> None:
    scanner = ClamdScanner(clamd.tcp_address, timeout=5)
    clamd.stop()
    try:
        result = await scanner.scan(_message(b"hello\r\n"))
        assert result.status == "error" and "unreachable" in result.detail
        assert not await scanner.ping()
    finally:
        clamd.start()
    scanner = ClamdScanner(clamd.tcp_address, timeout=5)  # start may have moved to a fresh port
    assert await scanner.ping()
    assert (await scanner.scan(EICAR)).status == "infected"


# --- failure modes that need no clamd ---------------------------------------------------------------


async def test_closed_port_is_an_error_at_once() -> None:
    scanner = ClamdScanner(f"127.0.0.1:{_closed_port()}", timeout=30)
    started = time.monotonic()
    result = await scanner.scan(_message(b"hello\r\n"))
    assert result.status == "error"
    assert "unreachable" in result.detail
    assert time.monotonic() - started < 2  # refused, not waited out to the 30 s timeout
    assert not await scanner.ping()


async def test_missing_unix_socket_is_an_error(tmp_path) -> None:
    result = await ClamdScanner(str(tmp_path / "no-such.sock"), timeout=5).scan(b"x")
    assert result.status == "error" and "unreachable" in result.detail


async def test_server_that_never_answers_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes every chunk, never replies; returns when the client hangs up
        writer.close()

    server, address = await _fake_clamd(swallow)
    async with server:
        started = time.monotonic()
        result = await ClamdScanner(address, timeout=0.3).scan(_message(b"hello\r\n"))
        assert result.status == "error" and "timed out" in result.detail
        assert time.monotonic() - started < 3
        assert not await ClamdScanner(address, timeout=0.3).ping()


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (b"Hello there\0", "unexpected reply"),
        (b"stream: OK", "without a reply"),  # hung up before the NUL
        (b"", "without a reply"),
        (b"x" * 10_000, "no end of line"),
    ],
)
async def test_odd_answers_are_errors(answer: bytes, detail: str) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(b"zINSTREAM\0"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server, address = await _fake_clamd(reply)
    async with server:
        result = await ClamdScanner(address, timeout=5).scan(_message(b"hello\r\n"))
    assert result.status == "error"
    assert detail in result.detail


async def test_chunks_are_length_prefixed_and_end_with_a_zero_length_chunk() -> None:
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readexactly(len(b"zINSTREAM\0")))
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            if size == 0:
                break
            received.append(await reader.readexactly(size))
        writer.write(b"stream: OK\0")
        await writer.drain()
        writer.close()

    server, address = await _fake_clamd(record)
    async with server:
        result = await ClamdScanner(address, timeout=5, chunk_size=4).scan(b"0123456789")
    assert result == ScanResult("clean")
    assert received == [b"zINSTREAM\0", b"0123", b"4567", b"89"]


# --- pure parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("127.0.0.1:3310", ClamdAddress(host="127.0.0.1", port=3310)),
        ("clamav.internal:3310", ClamdAddress(host="clamav.internal", port=3310)),
        ("[::1]:3310", ClamdAddress(host="::1", port=3310)),
        ("[2001:db8::5]:1", ClamdAddress(host="2001:db8::5", port=1)),
        ("/run/clamav/clamd.ctl", ClamdAddress(unix_path="/run/clamav/clamd.ctl")),
        ("unix:/run/clamav/clamd.ctl", ClamdAddress(unix_path="/run/clamav/clamd.ctl")),
        ("  127.0.0.1:3310 ", ClamdAddress(host="127.0.0.1", port=3310)),
    ],
)
def test_socket_specs_parse(spec: str, address: ClamdAddress) -> None:
    assert parse_clamd_address(spec) == address


@pytest.mark.parametrize(
    "spec", ["", "clamd", "127.0.0.1", "127.0.0.1:", "host:0", "host:65536", "host:33x", "::1:3310",
             "[::1]", "[::1]3310", "[]:3310", "unix:", ":3310"],
)
def test_bad_socket_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_clamd_address(spec)


def test_address_prints_back_as_a_spec() -> None:
    for spec in ("127.0.0.1:3310", "[::1]:3310", "unix:/run/clamd.sock"):
        assert str(parse_clamd_address(spec)) == spec


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"stream: OK\0", ScanResult("clean")),
        (b"stream: Eicar-Signature FOUND\0", ScanResult("infected", signature="Eicar-Signature")),
        (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", ScanResult("infected", signature="Win.Test.EICAR_HDB-1")),
        (
            b"INSTREAM size limit exceeded. ERROR\0",
            ScanResult("error", detail="clamd: INSTREAM size limit exceeded."),
        ),
        (b"stream:  FOUND\0", ScanResult("error", detail="unexpected reply from clamd: 'stream:  FOUND'")),
    ],
)
def test_clamd_replies_parse(reply: bytes, expected: ScanResult) -> None:
    assert parse_clamd_reply(reply) == expected


def test_from_config_is_none_when_disabled() -> None:
    assert from_config(AntivirusConfig(enabled=False, clamav_socket="127.0.0.1:3310")) is None


def test_from_config_builds_the_configured_scanner() -> None:
    scanner = from_config(AntivirusConfig(enabled=True, clamav_socket="[::1]:3311", timeout=7.5))
    assert scanner is not None
    assert scanner.address == ClamdAddress(host="::1", port=3311)
    assert scanner.timeout == 7.5


def test_scanner_refuses_a_bad_spec_at_construction() -> None:
    with pytest.raises(ValueError):
        ClamdScanner("not-an-address", timeout=5)


# --- the SMTP decision --------------------------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["tempfail", "accept"])
def test_infected_is_rejected_554_5_7_1_with_the_signature(on_error: str) -> None:
    decision = scan_decision(ScanResult.infected("Eicar-Signature"), on_error, "mx.example.test")
    assert not decision.accept
    assert decision.reply == SmtpReply(554, "5.7.1", "Message rejected: virus found (Eicar-Signature)")
    assert decision.header is None


def test_scanner_error_with_tempfail_is_451_4_7_1() -> None:
    decision = scan_decision(ScanResult.error("clamd unreachable"), "tempfail", "mx.example.test")
    assert not decision.accept
    assert decision.reply == SmtpReply(451, "4.7.1", "Virus scanner unavailable, try again later")


def test_scanner_error_with_accept_accepts_and_marks_the_message_unscanned() -> None:
    decision = scan_decision(ScanResult.error("clamd unreachable"), "accept", "mx.example.test")
    assert decision.accept and decision.reply is None
    assert decision.header == (VIRUS_HEADER, "unavailable")


@pytest.mark.parametrize("on_error", ["tempfail", "accept"])
def test_clean_is_accepted_with_a_scanned_by_header(on_error: str) -> None:
    decision = scan_decision(ScanResult.clean(), on_error, "mx.example.test")
    assert decision.accept
    assert decision.header == ("X-Virus-Scanned", "clamav (mx.example.test)")


def test_signature_cannot_inject_a_line_into_the_reply() -> None:
    decision = scan_decision(ScanResult.infected("Bad\r\n250 2.0.0 Ok\u00e9"), "tempfail", "mx")
    assert decision.reply is not None
    assert "\r" not in decision.reply.text and "\n" not in decision.reply.text
    assert decision.reply.text.isascii()
    assert decision.reply.text == "Message rejected: virus found (Bad??250 2.0.0 Ok?)"


def test_unknown_on_error_setting_is_refused() -> None:
    with pytest.raises(ValueError):
        scan_decision(ScanResult.clean(), "ignore", "mx")
