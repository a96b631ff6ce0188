"""WhyMailSMTP's own hot paths, in process (no Ray, no database): reply coalescing (RFC 2920), the
fast path parser for `<local@domain>` and the chunked DATA reader. End-to-end behaviour with real
clients (smtplib, swaks) is in tests/integration/test_smtp_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import smtplib
import socket
import ssl
import struct
import types
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given
from hypothesis import strategies as st

from whymail.config import Config
from whymail.directory.snapshot import DirectorySnapshot
from whymail.ratelimit import ConnectionCounter, TokenBuckets
from whymail.smtp.server import (
    InboundHandler,
    SessionRegistry,
    SmtpStats,
    WhyMailSMTP,
    fast_getaddr,
    smtp_factory,
)
from whymail.store.models import DeliveryOutcome
from whymail.tls import ensure_self_signed

DOMAIN = "session.test"
LIMIT = 100_000  # max_message_size of the server under test


# --- _getaddr fast path: exactly aiosmtpd's answer whenever it answers ------------------------------


def _original_getaddr(arg: str):
    """aiosmtpd's SMTP._getaddr (the email header parser), or the exception it raises."""
    try:
        return SMTP._getaddr(types.SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]
    except Exception as exc:  # e.g. IndexError on a lone "<"
        return type(exc)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<bob@example.org>", ("bob@example.org", "")),
        ("<bob@example.org> SIZE=2048 BODY=8BITMIME", ("bob@example.org", "SIZE=2048 BODY=8BITMIME")),
        ("<bob@example.org>SIZE=1", ("bob@example.org", "SIZE=1")),
        ("<a.b+c_d=e@sub.example.org>", ("a.b+c_d=e@sub.example.org", "")),
        ("<Jörg.Müller@köln.example>", ("Jörg.Müller@köln.example", "")),
        ("<用户@例子.测试> SMTPUTF8", ("用户@例子.测试", "SMTPUTF8")),
        ("<>", ("<>", "")),
        ("<> SIZE=5", ("<>", " SIZE=5")),  # aiosmtpd does not strip after a null path
    ],
)
def test_plain_paths_take_the_fast_path_with_aiosmtpds_answer(arg: str, expected: tuple[str, str]) -> None:
    assert fast_getaddr(arg) == expected
    assert _original_getaddr(arg) == expected


@pytest.mark.parametrize(
    "arg",
    [
        '<"a b"@example.org>',
        "<@route.example:a@example.org>",
        "<a@[192.0.2.1]>",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<a@example..org>",
        "<a@example.org.>",
        "<a(comment)@example.org>",
        "<a@example.org> (comment) SIZE=1",
        "<a@example.org",
        "a@example.org",
        "<a>",
        "<",
        "<a\xa0b@example.org>",
    ],
)
def test_anything_unusual_goes_to_the_full_parser(arg: str) -> None:
    assert fast_getaddr(arg) is None


_ADDR_CHARS = st.sampled_from(
    list("aZ09!#$%&'*+-/=?^_`{|}~.@<>()[]\\\",;: \t") + ["é", "日", "\xa0", "\u2028", "\udc80", "\x00", "\x0b", "\x7f"]
)


@given(
    local=st.text(_ADDR_CHARS, max_size=8),
    domain=st.text(_ADDR_CHARS, max_size=8),
    tail=st.text(_ADDR_CHARS, max_size=8),
    wrap=st.booleans(),
)
@example(local="a", domain="b", tail=" \t (x) S", wrap=True)
@example(local="a", domain="b", tail="\t\xa0 S ", wrap=True)
def test_fast_getaddr_agrees_with_aiosmtpd_whenever_it_answers(local: str, domain: str, tail: str, wrap: bool) -> None:
    arg = (f"<{local}@{domain}>" if wrap else f"{local}@{domain}") + tail
    fast = fast_getaddr(arg)
    if fast is not None:
        assert fast == _original_getaddr(arg), arg


@given(st.text(_ADDR_CHARS, max_size=20))
def test_fast_getaddr_agrees_with_aiosmtpd_on_any_text(arg: str) -> None:
    fast = fast_getaddr(arg)
    if fast is not None:
        assert fast == _original_getaddr(arg), arg


def test_local_part_limit_still_applies() -> None:
    session = WhyMailSMTP.__new__(WhyMailSMTP)  # _getaddr needs no state but the limit
    session.local_part_limit = 3
    assert session._getaddr("<abcd@example.org>") == (None, None)
    assert session._getaddr("<abc@example.org>") == ("abc@example.org", "")


# --- a server in this process -------------------------------------------------------------------


@dataclass
class Server:
    port: int
    delivered: list[bytes] = field(default_factory=list)
    sessions: list[WhyMailSMTP] = field(default_factory=list)
    writes: list[bytes] = field(default_factory=list)  # every write of a reply batch, all sessions


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    config = Config.model_validate({"server": {"smtp": {"max_message_size": LIMIT}}})
    users = [
        {"id": i, "email": f"user{i}@{DOMAIN}", "domain": DOMAIN, "local_part": f"user{i}",
         "quota_bytes": 0, "storage_used": 0, "is_active": True}
        for i in (1, 2)
    ]
    snapshot = DirectorySnapshot.from_rows([{"name": DOMAIN, "is_active": True}], users, [])
    state = Server(port=0)

    async def deliver(body, recipients, envelope_from, mailbox="INBOX"):
        state.delivered.append(body)
        return [DeliveryOutcome(delivery_id=uuid.uuid4(), ok=True, uid=1, mailbox_id=1) for _ in recipients]

    stats = SmtpStats()
    handler = InboundHandler(config, types.SimpleNamespace(current=snapshot), deliver, {}, stats)
    make = smtp_factory(
        config, handler, connections=ConnectionCounter(100, 1000), command_rate=TokenBuckets(1e6, 1e6),
        registry=SessionRegistry(), stats=stats,
    )

    def factory() -> WhyMailSMTP:
        session = make()
        state.sessions.append(session)
        return session

    listener = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        listener.close()
        for session in state.sessions:
            if session.transport is not None:
                session.transport.close()
        await listener.wait_closed()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: Server, ehlo: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer)
        assert (await client.reply()).startswith("220 ")
        session = server.sessions[-1]
        original = session._writer.write

        def counting_write(data: bytes) -> None:
            server.writes.append(bytes(data))
            original(data)

        session._writer.write = counting_write  # type: ignore[method-assign]
        if ehlo:
            client.send(b"EHLO client.example\r\n")
            assert (await client.reply()).startswith("250 ")
        server.writes.clear()
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def reply(self) -> str:
        """The last line of the next reply ("" at end of stream)."""
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            if line[3:4] != "-":
                return line.rstrip("\r\n")

    async def replies(self, count: int) -> list[str]:
        return [await self.reply() for _ in range(count)]

    async def close(self, reset: bool = False) -> None:
        if reset:
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


_ENVELOPE = b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<user1@" + DOMAIN.encode() + b">\r\nDATA\r\n"


def _delivered_content(body: bytes) -> bytes:
    """What the handler got, without the Received header it prepends."""
    end = body.index(b"\r\n", body.index(b"; ")) + 2  # the header ends with "; <date>\r\n"
    assert body.startswith(b"Received: ")
    return body[end:]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


# --- replies are coalesced, never lost ----------------------------------------------------------


async def test_pipelined_mail_rcpt_data_get_their_three_replies_in_one_write(server: Server) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    assert [r[:9] for r in await client.replies(3)] == ["250 2.1.0", "250 2.1.5", "354 End d"]
    assert len(server.writes) == 1
    client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert (await client.reply()).startswith("250 2.0.0 OK: queued as ")
    assert len(server.writes) == 2
    await client.close()


async def test_one_command_at_a_time_gets_each_reply_at_once(server: Server) -> None:
    client = await Client.connect(server)
    for _ in range(3):
        client.send(b"NOOP\r\n")
        assert await client.reply() == "250 2.0.0 OK"
    assert len(server.writes) == 3
    await client.close()


async def test_a_long_pipelined_group_ending_in_quit_gets_every_reply_before_the_close(server: Server) -> None:
    client = await Client.connect(server)
    client.send(b"NOOP\r\n" * 2000 + b"QUIT\r\n")
    assert await client.replies(2000) == ["250 2.0.0 OK"] * 2000
    assert (await client.reply()).startswith("221 ")
    assert await client.reader.read() == b""
    assert 2 < len(server.writes) < 2000 // 100  # in batches of about 4 KiB
    await client.close()


async def test_the_reply_before_a_close_for_bogus_commands_is_sent(server: Server) -> None:
    client = await Client.connect(server)
    client.send(b"NOOP\r\n" + b"BOGUS\r\n" * 5 + b"NOOP\r\n")
    replies = await client.replies(6)
    assert replies[0] == "250 2.0.0 OK"
    assert [r[:3] for r in replies[1:]] == ["500"] * 4 + ["502"]
    assert await client.reader.read() == b""  # closed; the last NOOP is never answered
    await client.close()


async def test_held_replies_are_written_before_an_idle_timeout_closes_the_session(server: Server) -> None:
    client = await Client.connect(server)
    session = server.sessions[-1]
    session._pending += b"250 2.0.0 OK\r\n"  # as if held when the timer fires
    session._timeout_cb()
    assert await client.reply() == "250 2.0.0 OK"
    assert await client.reader.read() == b""
    await client.close()


# --- DATA ---------------------------------------------------------------------------------------


async def test_message_split_anywhere_and_a_command_after_the_dot_in_the_same_write(server: Server) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    stream = b"Subject: split\r\n\r\n..dot\r\nend.\r\n.\r\nNOOP\r\n"  # dot-stuffed, as sent
    end = stream.index(b"\r\n.\r\n")
    cuts = [end - 3, end + 1, end + 3]  # the terminator straddles three writes
    for a, b in zip([0, *cuts[:-1]], cuts, strict=True):
        client.send(stream[a:b])
        await client.writer.drain()
        await asyncio.sleep(0.02)
    client.send(stream[cuts[-1] :])
    assert (await client.reply()).startswith("250 2.0.0 OK: queued")
    assert await client.reply() == "250 2.0.0 OK"  # the NOOP stayed in the reader for the next command
    assert [_delivered_content(b) for b in server.delivered] == [b"Subject: split\r\n\r\n.dot\r\nend.\r\n"]
    await client.close()


async def test_empty_message(server: Server) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE + b".\r\n")
    assert [r[:3] for r in await client.replies(4)] == ["250", "250", "354", "250"]
    assert [_delivered_content(b) for b in server.delivered] == [b""]
    await client.close()


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n"])
async def test_only_crlf_dot_crlf_ends_data_not_a_smuggled_bare_lf_or_cr(server: Server, fake_end: bytes) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    smuggled = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<user2@" + DOMAIN.encode() + b">\r\nDATA\r\nforged\r\n"
    client.send(b"Subject: a" + fake_end + smuggled + b".\r\n")
    assert (await client.reply()).startswith("250 2.0.0 OK: queued")
    client.send(b"NOOP\r\n")
    assert await client.reply() == "250 2.0.0 OK"
    assert len(server.delivered) == 1
    assert smuggled[4:] in _delivered_content(server.delivered[0])
    await client.close()


async def test_lines_over_1000_octets_and_a_body_over_the_read_limit_arrive_byte_exact(server: Server) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    message = b"Subject: long\r\n\r\n" + b"x" * 70_000 + b"\r\n" + b"y.\r\n" * 5000
    client.send(message + b".\r\n")
    assert (await client.reply()).startswith("250 2.0.0 OK: queued")
    assert [_delivered_content(b) for b in server.delivered] == [message]
    await client.close()


async def test_too_much_data_gets_552_5_3_4_after_the_dot_and_the_session_goes_on(server: Server) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    client.send(b"z" * 98 + b"\r\n")
    client.send((b"a" * 98 + b"\r\n") * (LIMIT // 100 + 10) + b".\r\nNOOP\r\n")
    assert (await client.reply()).startswith("552 5.3.4 ")
    assert await client.reply() == "250 2.0.0 OK"
    assert server.delivered == []
    await client.close()


async def test_data_exactly_at_the_limit_is_accepted(server: Server) -> None:
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    message = b"b" * (LIMIT - 2) + b"\r\n"
    client.send(message + b".\r\n")
    assert (await client.reply()).startswith("250 2.0.0 ")
    assert [_delivered_content(b) for b in server.delivered] == [message]
    await client.close()


@pytest.mark.parametrize("reset", [False, True])
async def test_connection_lost_in_the_middle_of_data_delivers_nothing_and_logs_no_error(
    server: Server, reset: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    client.send(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 5000 + b"\r\n.")  # never the final CRLF
    await client.writer.drain()
    await asyncio.sleep(0.05)
    await client.close(reset=reset)
    await _settle()
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    await _settle()
    assert server.delivered == []
    assert all(session.transport is None for session in server.sessions)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


async def test_end_of_stream_seen_by_the_reader_in_the_middle_of_data_ends_the_session_quietly(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader hitting EOF (IncompleteReadError) rather than aiosmtpd cancelling the session."""
    caplog.set_level(logging.INFO)
    client = await Client.connect(server)
    client.send(_ENVELOPE)
    await client.replies(3)
    client.send(b"Subject: cut\r\n\r\npartial\r\n")
    await client.writer.drain()
    await asyncio.sleep(0.05)
    server.sessions[-1]._reader.feed_eof()
    assert await client.reader.read() == b""  # the server closed the connection
    await client.close()
    await _settle()
    gc.collect()
    await _settle()
    assert server.delivered == []
    assert any(r.getMessage() == "connection lost during DATA" for r in caplog.records)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


async def test_idle_timeout_closes_an_idle_session_and_spares_an_active_one() -> None:
    """Behaviour, not timing: only lower bounds (a timer never fires early) and a generous upper one."""
    timeout = 0.5
    config = Config.model_validate({"server": {"smtp": {"timeout": timeout}}})
    stats = SmtpStats()
    registry = SessionRegistry()
    handler = InboundHandler(config, types.SimpleNamespace(current=None), None, {}, stats)  # type: ignore[arg-type]
    make = smtp_factory(
        config, handler, connections=ConnectionCounter(100, 1000), command_rate=TokenBuckets(1e6, 1e6),
        registry=registry, stats=stats,
    )
    listener = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        for reader in (idle_reader, busy_reader):
            assert (await reader.readline()).startswith(b"220 ")
        connected = loop.time()
        idle_closed = asyncio.ensure_future(idle_reader.read())

        async def noop() -> None:
            busy_writer.write(b"NOOP\r\n")
            assert await asyncio.wait_for(busy_reader.readline(), 10) == b"250 2.0.0 OK\r\n"

        # The busy session keeps talking until the idle one has been closed, then for one more whole
        # timeout: it has lived well past its first deadline, so each command moved the deadline.
        while not idle_closed.done():
            assert loop.time() - connected < 10, "the idle session was never closed"
            await noop()
            await asyncio.sleep(0.02)
        assert idle_closed.result() == b""
        assert loop.time() - connected >= timeout * 0.9
        spared_until = loop.time() + timeout
        while loop.time() < spared_until:
            await noop()
            await asyncio.sleep(0.02)

        # Now the busy session goes quiet: it gets the reply to its last command, then is closed.
        start = loop.time()
        await noop()
        assert await asyncio.wait_for(busy_reader.read(), 10) == b""
        assert loop.time() - start >= timeout * 0.9
        await asyncio.wait_for(registry.empty.wait(), 10)
        for writer in (idle_writer, busy_writer):
            writer.close()
    finally:
        listener.close()
        await listener.wait_closed()


# --- STARTTLS: one session, counted once, freed once --------------------------------------------


@dataclass
class TlsServer:
    port: int
    connections: ConnectionCounter
    registry: SessionRegistry
    stats: SmtpStats
    delivered: list[bytes]


@contextlib.asynccontextmanager
async def _tls_server(tmp_path: Path, *, per_ip: int = 3, timeout: float = 300.0) -> AsyncIterator[TlsServer]:
    cert, key = ensure_self_signed(tmp_path / "tls", "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(cert, key)
    config = Config.model_validate({"server": {"smtp": {"timeout": timeout}}})
    users = [{"id": 1, "email": f"user1@{DOMAIN}", "domain": DOMAIN, "local_part": "user1",
              "quota_bytes": 0, "storage_used": 0, "is_active": True}]
    snapshot = DirectorySnapshot.from_rows([{"name": DOMAIN, "is_active": True}], users, [])
    delivered: list[bytes] = []

    async def deliver(body, recipients, envelope_from, mailbox="INBOX"):
        delivered.append(body)
        return [DeliveryOutcome(delivery_id=uuid.uuid4(), ok=True, uid=1, mailbox_id=1) for _ in recipients]

    state = TlsServer(0, ConnectionCounter(per_ip, 1000), SessionRegistry(), SmtpStats(), delivered)
    handler = InboundHandler(config, types.SimpleNamespace(current=snapshot), deliver, {}, state.stats)
    make = smtp_factory(
        config, handler, connections=state.connections, command_rate=TokenBuckets(1e6, 1e6),
        registry=state.registry, stats=state.stats, tls_context=tls,
    )
    listener = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        listener.close()
        for session in list(state.registry.sessions):
            if session.transport is not None:
                session.transport.close()
        await listener.wait_closed()


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _starttls_session(port: int, n: int) -> None:
    """One whole STARTTLS session with smtplib (blocking: run in a thread)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("tls.example")
        assert smtp.starttls(context=_client_tls())[0] == 220
        smtp.ehlo("tls.example")
        smtp.sendmail("bob@example.org", [f"user1@{DOMAIN}"], f"Subject: tls {n}\r\n\r\nhi\r\n")


async def test_starttls_sessions_take_one_connection_slot_each_and_give_it_back(tmp_path: Path) -> None:
    async with _tls_server(tmp_path, per_ip=3) as server:
        for n in range(6):  # twice the per-IP limit, one after the other: none may get 421
            await asyncio.to_thread(_starttls_session, server.port, n)
        await asyncio.wait_for(server.registry.empty.wait(), 10)
        assert server.connections.open == 0
        assert server.registry.sessions == set()
        assert server.stats.sessions == 6
        assert len(server.delivered) == 6
        assert all(b" with ESMTPS id " in body for body in server.delivered)


def _cut_starttls(port: int, how: str) -> None:
    """STARTTLS, then no (good) handshake: the client hangs up, sends garbage, or says nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"220 ")
        sock.sendall(b"EHLO cut.example\r\nSTARTTLS\r\n")
        while (line := stream.readline())[3:4] == b"-":
            pass
        assert line.startswith(b"250 ")
        assert stream.readline().startswith(b"220 ")
        if how == "garbage":
            sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
        if how in ("garbage", "silent"):
            try:
                assert stream.read() == b""  # the server ends the session
            except ConnectionResetError:
                pass
        stream.close()


@pytest.mark.parametrize("how", ["hang_up", "garbage", "silent"])
async def test_a_starttls_handshake_that_never_completes_frees_the_slot_and_the_registry(
    tmp_path: Path, how: str
) -> None:
    async with _tls_server(tmp_path, per_ip=3, timeout=0.5) as server:
        await asyncio.to_thread(_cut_starttls, server.port, how)
        await asyncio.wait_for(server.registry.empty.wait(), 10)
        assert server.connections.open == 0
        await asyncio.to_thread(_starttls_session, server.port, 0)  # and the address is still served
        await asyncio.wait_for(server.registry.empty.wait(), 10)
        assert server.connections.open == 0
        assert len(server.delivered) == 1


# --- the quota at the end of DATA: all recipients or none ---------------------------------------


@pytest.mark.parametrize("shard_knows", [False, True])
async def test_a_message_over_one_recipients_quota_is_stored_for_nobody(shard_knows: bool) -> None:
    """`full` has room at RCPT (no SIZE=) but not for the message: 452 4.2.2, and `ok` gets nothing."""
    config = Config.model_validate({"server": {"smtp": {"max_message_size": LIMIT}}})
    snapshot_used = 0 if shard_knows else 2500
    users = [
        {"id": 1, "email": f"ok@{DOMAIN}", "domain": DOMAIN, "local_part": "ok",
         "quota_bytes": 0, "storage_used": 0, "is_active": True},
        {"id": 2, "email": f"full@{DOMAIN}", "domain": DOMAIN, "local_part": "full",
         "quota_bytes": 3000, "storage_used": snapshot_used, "is_active": True},
    ]
    snapshot = DirectorySnapshot.from_rows([{"name": DOMAIN, "is_active": True}], users, [])
    usage = {2: 2500} if shard_knows else {}  # reported by a shard, fresher than the snapshot
    delivered: list[list[int]] = []

    async def deliver(body, recipients, envelope_from, mailbox="INBOX"):
        delivered.append([r.user_id for r in recipients])
        return [DeliveryOutcome(delivery_id=uuid.uuid4(), ok=True, uid=1, mailbox_id=1) for _ in recipients]

    stats = SmtpStats()
    handler = InboundHandler(config, types.SimpleNamespace(current=snapshot), deliver, usage, stats)
    make = smtp_factory(
        config, handler, connections=ConnectionCounter(100, 1000), command_rate=TokenBuckets(1e6, 1e6),
        registry=SessionRegistry(), stats=stats,
    )
    state = Server(port=0)

    def factory() -> WhyMailSMTP:
        state.sessions.append(make())
        return state.sessions[-1]

    listener = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        client = await Client.connect(state)
        envelope = f"MAIL FROM:<bob@example.org>\r\nRCPT TO:<ok@{DOMAIN}>\r\nRCPT TO:<full@{DOMAIN}>\r\nDATA\r\n"
        for _ in range(3):  # the client retries: still nothing stored
            client.send(envelope.encode())
            assert [r[:9] for r in await client.replies(4)] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354 End d"]
            client.send(b"Subject: big\r\n\r\n" + b"x" * 600 + b"\r\n.\r\n")
            assert (await client.reply()).startswith("452 4.2.2 ")
        assert delivered == []
        assert stats.messages_refused == 3
        # A message that fits both is delivered to both.
        client.send(envelope.encode())
        await client.replies(4)
        client.send(b"Subject: small\r\n\r\nhi\r\n.\r\n")
        assert (await client.reply()).startswith("250 2.0.0 ")
        assert delivered == [[1, 2]]
        await client.close()
    finally:
        listener.close()
        await listener.wait_closed()
