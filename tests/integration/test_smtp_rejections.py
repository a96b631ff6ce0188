"""Inbound SMTP refusals, limits and bad input, end to end: the exact reply, and nothing stored.

Limits that count per client IP (connections, commands) are exercised from an address of their own
in 127.0.0.0/8, so that using them up does not slow down the other tests, which come from 127.0.0.1.
"""

from __future__ import annotations

import random
import re
import smtplib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from tests.integration.conftest import MailSystem

MAX_SIZE = 12 * 1024 * 1024  # WHYMAIL__SERVER__SMTP__MAX_MESSAGE_SIZE of the fixture
MAX_RECIPIENTS = 20
MAX_CONNECTIONS_PER_IP = 60
ENHANCED_REPLY = re.compile(r"^(\d{3})[ -]([245])\.\d{1,3}\.\d{1,3}( |$)")


def _fresh_loopback_ip() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"


class RawSession:
    """A line-level SMTP client on a plain socket: send exactly what we want, read every reply line."""

    def __init__(self, port: int, source_ip: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source_ip, 0)
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.read_reply()

    def read_reply(self) -> list[str]:
        """All lines of one (possibly multi-line) reply; [] at end of stream."""
        lines = []
        while True:
            raw = self.file.readline()
            if not raw:
                return lines
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    def command(self, line: str | bytes) -> list[str]:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.read_reply()

    def at_eof(self) -> bool:
        """True when the server has closed the connection (FIN or RST) and sent nothing more."""
        try:
            return self.file.read() == b""
        except ConnectionResetError:
            return True

    def close(self, reset: bool = False) -> None:
        if reset:  # SO_LINGER 0: the close sends RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.file.close()
        self.sock.close()


@contextmanager
def _raw(mail_system: MailSystem, source_ip: str = "127.0.0.1") -> Iterator[RawSession]:
    session = RawSession(mail_system.smtp_port, source_ip)
    try:
        yield session
    finally:
        session.close()


def _smtp(mail_system: MailSystem) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=60)
    smtp.ehlo("client.example")
    return smtp


def _message(to: str, subject: str, body: bytes = b"hello\r\n") -> bytes:
    return f"From: bob@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n".encode() + body


def _assert_reply(reply: tuple[int, bytes] | list[str], code: int, enhanced: str) -> None:
    """An smtplib (code, text) pair or RawSession lines is `code enhanced ...`."""
    if isinstance(reply, tuple):
        got_code, text = reply[0], reply[1].decode("utf-8", "replace")
    else:
        assert reply, "no reply: the connection was closed"
        got_code, text = int(reply[-1][:3]), reply[-1][4:]
    assert (got_code, text.split(" ", 1)[0]) == (code, enhanced), reply


def _assert_nothing_stored(mail_system: MailSystem, domain: str) -> None:
    """No message row for any user of `domain` and no file anywhere under its Maildir tree."""
    rows = mail_system.fetch(
        """SELECT count(*) AS n FROM messages m JOIN users u ON u.id = m.user_id
            WHERE u.email LIKE '%@' || $1""",
        domain,
    )
    assert rows[0]["n"] == 0
    base = mail_system.maildir_root / domain
    files = [p for p in base.rglob("*") if p.is_file()] if base.exists() else []
    assert files == []
    usage = mail_system.fetch(
        "SELECT coalesce(sum(storage_used), 0) AS used FROM users WHERE email LIKE '%@' || $1", domain
    )
    assert usage[0]["used"] == 0


def _subject_stored_anywhere(mail_system: MailSystem, subject: str) -> bool:
    return bool(mail_system.fetch("SELECT 1 FROM messages WHERE subject = $1", subject))


def _set_quota(mail_system: MailSystem, email: str, quota_bytes: int) -> None:
    from whymail.directory import service

    async def change():
        conn = await asyncpg.connect(mail_system.dsn)
        try:
            await service.set_quota(conn, email, quota_bytes)
        finally:
            await conn.close()

    mail_system._directory_changed(change)  # waits until the SMTP gateway has seen the change


def _transaction(
    mail_system: MailSystem, rcpts: list[str], data: bytes, mail_options: tuple = ()
) -> tuple[tuple[int, bytes], list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """MAIL, every RCPT, then DATA if any recipient was accepted: the replies to each."""
    with _smtp(mail_system) as smtp:
        mail = smtp.mail("bob@example.org", list(mail_options))
        rcpt = [smtp.rcpt(r) for r in rcpts] if mail[0] == 250 else []
        data_reply = smtp.data(data) if any(code == 250 for code, _ in rcpt) else None
        if data_reply is None:
            smtp.rset()
    return mail, rcpt, data_reply


# --- recipients refused -------------------------------------------------------------------------


def test_unknown_user_gets_550_5_1_1_and_nothing_is_stored(mail_system: MailSystem, domain: str) -> None:
    _, [rcpt], data = _transaction(
        mail_system, [f"nobody@{domain}"], _message(f"nobody@{domain}", f"unknown {domain}")
    )
    _assert_reply(rcpt, 550, "5.1.1")
    assert data is None
    _assert_nothing_stored(mail_system, domain)
    assert not _subject_stored_anywhere(mail_system, f"unknown {domain}")


def test_unknown_user_next_to_a_real_one_gets_550_5_1_1_and_only_the_real_one_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    _, [good, bad], data = _transaction(mail_system, [alice, f"nobody@{domain}"], _message(alice, "mixed"))
    _assert_reply(good, 250, "2.1.5")
    _assert_reply(bad, 550, "5.1.1")
    _assert_reply(data, 250, "2.0.0")
    [row] = mail_system.messages_of(alice)
    assert row["subject"] == "mixed"
    files = [p for p in (mail_system.maildir_root / domain).rglob("*") if p.is_file()]
    assert files == [mail_system.maildir_root / row["maildir_path"]]  # nothing for `nobody`


def test_non_local_domain_without_auth_gets_550_5_7_1_and_nothing_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    _, [rcpt], data = _transaction(
        mail_system, ["someone@example.org"], _message("someone@example.org", f"relay {domain}")
    )
    _assert_reply(rcpt, 550, "5.7.1")
    assert data is None
    assert not _subject_stored_anywhere(mail_system, f"relay {domain}")
    queued = mail_system.fetch(
        "SELECT 1 FROM outbound_queue WHERE $1 = ANY(recipients)", "someone@example.org"
    )
    assert queued == []  # not relayed either


def test_disabled_user_gets_550_5_2_1_and_nothing_is_stored(mail_system: MailSystem, domain: str) -> None:
    off = f"off@{domain}"
    mail_system.add_user(off, enabled=False)
    _, [rcpt], data = _transaction(mail_system, [off], _message(off, "disabled"))
    _assert_reply(rcpt, 550, "5.2.1")
    assert data is None
    _assert_nothing_stored(mail_system, domain)


def test_alias_to_a_disabled_user_gets_550_5_2_1_and_nothing_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    off = f"off@{domain}"
    mail_system.add_user(off, enabled=False)
    mail_system.add_alias(f"list@{domain}", [off])
    _, [rcpt], _ = _transaction(mail_system, [f"list@{domain}"], _message(f"list@{domain}", "disabled alias"))
    _assert_reply(rcpt, 550, "5.2.1")
    _assert_nothing_stored(mail_system, domain)


# --- quota --------------------------------------------------------------------------------------


def test_declared_size_over_quota_gets_452_4_2_2_at_rcpt_and_nothing_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    small = f"small@{domain}"
    mail_system.add_user(small, quota_bytes=1000)
    mail, [rcpt], data = _transaction(mail_system, [small], _message(small, "too big"), ("SIZE=5000",))
    _assert_reply(mail, 250, "2.1.0")
    _assert_reply(rcpt, 452, "4.2.2")
    assert data is None
    _assert_nothing_stored(mail_system, domain)


def test_message_that_would_overflow_the_quota_gets_452_4_2_2_after_data_and_is_not_stored(
    mail_system: MailSystem, domain: str
) -> None:
    small = f"small@{domain}"
    mail_system.add_user(small, quota_bytes=3000)
    filler = b"x" * 70 + b"\r\n"
    _, _, first = _transaction(mail_system, [small], _message(small, "first", filler * 25))
    _assert_reply(first, 250, "2.0.0")
    [stored] = mail_system.messages_of(small)
    # No SIZE=: RCPT cannot know yet (usage < quota), the shard refuses at the end of DATA.
    _, [rcpt], second = _transaction(mail_system, [small], _message(small, "second", filler * 25))
    _assert_reply(rcpt, 250, "2.1.5")
    _assert_reply(second, 452, "4.2.2")
    assert [r["subject"] for r in mail_system.messages_of(small)] == ["first"]
    assert mail_system.maildir_files(domain, "small") == [mail_system.maildir_root / stored["maildir_path"]]
    used = mail_system.fetch("SELECT storage_used FROM users WHERE email = $1", small)[0]["storage_used"]
    assert used == stored["size"]
    # Now that the gateway knows the usage, a declared size that does not fit is refused at RCPT.
    _, [rcpt], _ = _transaction(mail_system, [small], _message(small, "third"), (f"SIZE={3000 - used + 1}",))
    _assert_reply(rcpt, 452, "4.2.2")
    assert [r["subject"] for r in mail_system.messages_of(small)] == ["first"]


def test_user_already_over_quota_gets_452_4_2_2_at_rcpt_and_nothing_more_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    full = f"full@{domain}"
    mail_system.add_user(full)
    _, _, first = _transaction(mail_system, [full], _message(full, "before", (b"y" * 98 + b"\r\n") * 20))
    _assert_reply(first, 250, "2.0.0")
    _set_quota(mail_system, full, 1000)  # usage (> 2000) is now above the quota
    _, [rcpt], data = _transaction(mail_system, [full], _message(full, "after", b"z\r\n"))
    _assert_reply(rcpt, 452, "4.2.2")
    assert data is None
    assert [r["subject"] for r in mail_system.messages_of(full)] == ["before"]
    assert len(mail_system.maildir_files(domain, "full")) == 1


def test_message_over_one_recipients_quota_is_stored_for_none_and_retries_add_no_copies(
    mail_system: MailSystem, domain: str
) -> None:
    ok, full = f"ok@{domain}", f"full@{domain}"
    mail_system.add_user(ok)
    mail_system.add_user(full, quota_bytes=3000)
    filler = b"x" * 70 + b"\r\n"
    _, _, first = _transaction(mail_system, [full], _message(full, "first", filler * 25))
    _assert_reply(first, 250, "2.0.0")
    used = mail_system.fetch("SELECT storage_used FROM users WHERE email = $1", full)[0]["storage_used"]
    message = _message(f"{ok}, {full}", "both", filler * 25)
    assert len(message) <= 3000 - 1 and used + len(message) > 3000  # fits an empty box, not `full`'s
    # No SIZE=: both RCPTs are accepted; the message only turns out too big for `full` at the end of DATA.
    for _ in range(4):  # a client retrying the 452 as it should
        _, rcpts, data = _transaction(mail_system, [ok, full], message)
        for rcpt in rcpts:
            _assert_reply(rcpt, 250, "2.1.5")
        _assert_reply(data, 452, "4.2.2")
    assert mail_system.messages_of(ok) == []
    assert mail_system.maildir_files(domain, "ok") == []
    assert [r["subject"] for r in mail_system.messages_of(full)] == ["first"]
    assert mail_system.fetch("SELECT storage_used FROM users WHERE email = $1", ok)[0]["storage_used"] == 0


# --- message size -------------------------------------------------------------------------------


def test_declared_size_over_the_limit_gets_552_5_3_4_at_mail_from_and_nothing_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        _assert_reply(smtp.command(f"MAIL FROM:<bob@example.org> SIZE={MAX_SIZE + 1}"), 552, "5.3.4")
        _assert_reply(smtp.command(f"RCPT TO:<{alice}>"), 503, "5.5.1")  # no sender was accepted
        _assert_reply(smtp.command("DATA"), 503, "5.5.1")
        _assert_reply(smtp.command("QUIT"), 221, "2.0.0")
    _assert_nothing_stored(mail_system, domain)


def test_size_with_non_ascii_digits_gets_501_5_5_4_not_a_temporary_failure(mail_system: MailSystem) -> None:
    # "²".isdigit() is True in Python but int("²") raises: this must be a syntax error, not a 451.
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        for value in ("\u00b2", "\u0661\u0662", "1\u00b3"):
            _assert_reply(smtp.command(f"MAIL FROM:<bob@example.org> SIZE={value}"), 501, "5.5.4")
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org> SIZE=12"), 250, "2.1.0")


def test_declared_size_at_the_limit_is_accepted(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        _assert_reply(smtp.command(f"MAIL FROM:<bob@example.org> SIZE={MAX_SIZE}"), 250, "2.1.0")
        _assert_reply(smtp.command(f"RCPT TO:<{alice}>"), 250, "2.1.5")


def test_data_over_the_limit_without_size_gets_552_5_3_4_and_nothing_is_stored(
    mail_system: MailSystem, domain: str
) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    line = b"a" * 98 + b"\r\n"
    body = line * (MAX_SIZE // len(line) + 1000)
    with _smtp(mail_system) as smtp:
        _assert_reply(smtp.mail("bob@example.org"), 250, "2.1.0")
        _assert_reply(smtp.rcpt(alice), 250, "2.1.5")
        _assert_reply(smtp.data(_message(alice, "huge", body)), 552, "5.3.4")
        _assert_reply(smtp.noop(), 250, "2.0.0")  # the session goes on
    _assert_nothing_stored(mail_system, domain)


def test_data_line_over_1000_octets_is_accepted_and_stored_byte_exact(mail_system: MailSystem, domain: str) -> None:
    """RFC 5321 §4.5.3.1.6 sets 1000 octets as the minimum to accept, not a maximum: like Postfix, we
    store longer lines as they came rather than refuse the message (500 5.5.6 used to be the answer)."""
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    body = b"y" * 2000 + b"\r\n" + b"z" * 70_000 + b".\r\n" + b".leading dot\r\n" + b"after\r\n"
    sent = _message(alice, "long line", body)
    with _smtp(mail_system) as smtp:
        _assert_reply(smtp.mail("bob@example.org"), 250, "2.1.0")
        _assert_reply(smtp.rcpt(alice), 250, "2.1.5")
        _assert_reply(smtp.data(sent), 250, "2.0.0")
        _assert_reply(smtp.noop(), 250, "2.0.0")
    rows = mail_system.messages_of(alice)
    assert [r["subject"] for r in rows] == ["long line"]
    stored = (mail_system.maildir_root / rows[0]["maildir_path"]).read_bytes()
    assert stored.startswith(b"Authentication-Results: ") and b"\r\nReceived: " in stored
    assert stored.endswith(sent)
    assert rows[0]["size"] == len(stored)


# --- recipients per message ---------------------------------------------------------------------


def test_twenty_first_recipient_gets_452_4_5_3_and_is_not_delivered(
    mail_system: MailSystem, domain: str
) -> None:
    catcher, extra = f"catcher@{domain}", f"extra@{domain}"
    mail_system.add_user(catcher)
    mail_system.add_user(extra)
    mail_system.add_alias(f"@{domain}", [catcher])
    first_twenty = [f"r{i}@{domain}" for i in range(MAX_RECIPIENTS)]
    _, replies, data = _transaction(mail_system, [*first_twenty, extra], _message(catcher, "twenty"))
    for reply in replies[:MAX_RECIPIENTS]:
        _assert_reply(reply, 250, "2.1.5")
    _assert_reply(replies[MAX_RECIPIENTS], 452, "4.5.3")
    _assert_reply(data, 250, "2.0.0")
    assert [r["subject"] for r in mail_system.messages_of(catcher)] == ["twenty"]  # 20 addresses, one mailbox
    assert mail_system.messages_of(extra) == []
    assert mail_system.maildir_files(domain, "extra") == []


# --- per-IP limits ------------------------------------------------------------------------------


def test_connection_past_the_per_ip_limit_gets_421_4_7_0_greeting_and_is_closed(
    mail_system: MailSystem,
) -> None:
    ip = _fresh_loopback_ip()
    sessions: list[RawSession] = []
    try:
        for _ in range(MAX_CONNECTIONS_PER_IP):
            session = RawSession(mail_system.smtp_port, ip)
            sessions.append(session)
            assert session.greeting[0].startswith("220 "), session.greeting
        over = RawSession(mail_system.smtp_port, ip)
        sessions.append(over)
        _assert_reply(over.greeting, 421, "4.7.0")
        assert over.at_eof()
        # Another address is not affected.
        with _raw(mail_system, _fresh_loopback_ip()) as other:
            assert other.greeting[0].startswith("220 ")
        # A session that ends frees its slot: the server counts it off before its socket closes.
        _assert_reply(sessions[0].command("QUIT"), 221, "2.0.0")
        assert sessions[0].at_eof()
        again = RawSession(mail_system.smtp_port, ip)
        sessions.append(again)
        assert again.greeting[0].startswith("220 "), again.greeting
        _assert_reply(again.command("NOOP"), 250, "2.0.0")
    finally:
        for session in sessions:
            session.close()


def _gateway_stats(mail_system: MailSystem) -> dict:
    import ray

    return ray.get(mail_system.gateway().stats.remote())


def test_starttls_sessions_give_back_their_connection_slot_and_leave_no_session_open(
    mail_system: MailSystem,
) -> None:
    """A STARTTLS session is one connection: counted once, released once (aiosmtpd re-enters
    `connection_made` for the TLS transport). More of them from one address than the per-IP limit."""
    ip = _fresh_loopback_ip()
    before = _gateway_stats(mail_system)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    count = MAX_CONNECTIONS_PER_IP + 2
    for n in range(count):
        with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30, source_address=(ip, 0)) as smtp:
            assert smtp.ehlo("tls.example")[0] == 250, n
            assert smtp.starttls(context=context)[0] == 220, n
            assert smtp.ehlo("tls.example")[0] == 250, n
            _assert_reply(smtp.noop(), 250, "2.0.0")
    deadline = time.monotonic() + 20
    while (stats := _gateway_stats(mail_system))["sessions_open"] > before["sessions_open"]:
        assert time.monotonic() < deadline, f"sessions still open: {stats['sessions_open']} > {before}"
        time.sleep(0.05)
    assert stats["sessions"] >= before["sessions"] + count
    assert stats["sessions"] - before["sessions"] < 2 * count  # each counted once (others may run)
    # Every slot of that address is free again: a full per-IP load of plain sessions is served.
    sessions: list[RawSession] = []
    try:
        for _ in range(MAX_CONNECTIONS_PER_IP):
            sessions.append(RawSession(mail_system.smtp_port, ip))
            assert sessions[-1].greeting[0].startswith("220 "), sessions[-1].greeting
    finally:
        for session in sessions:
            session.close()


def test_command_flood_gets_421_4_7_0_and_the_connection_is_closed(mail_system: MailSystem) -> None:
    ip = _fresh_loopback_ip()
    chunk = 100
    with _raw(mail_system, ip) as smtp:
        refusal: list[str] = []
        sent = accepted = 0
        while not refusal and sent < 20_000:
            smtp.sock.sendall(b"NOOP\r\n" * chunk)  # pipelined; replies read after each chunk
            sent += chunk
            for _ in range(chunk):
                reply = smtp.read_reply()
                if reply != ["250 2.0.0 OK"]:
                    refusal = reply
                    break
                accepted += 1
        assert accepted >= 1000  # a burst of commands_per_minute / 6 is allowed
        _assert_reply(refusal, 421, "4.7.0")
        while reply := smtp.read_reply():  # commands already in flight may get the same 421
            _assert_reply(reply, 421, "4.7.0")
        assert smtp.at_eof()
    # Only that address is limited.
    with _raw(mail_system) as other:
        _assert_reply(other.command("NOOP"), 250, "2.0.0")


# --- bad input ----------------------------------------------------------------------------------


def test_garbage_commands_get_500_5_5_x_and_the_session_continues(
    mail_system: MailSystem, domain: str
) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        for garbage in (b"FOO bar", b"", b"\xff\xfe\xfd", b"   ", b"XYZZY", b"MAIL\x00FROM"):
            reply = smtp.command(garbage)
            assert re.match(r"^500 5\.5\.\d{1,3} ", reply[-1]), (garbage, reply)
        _assert_reply(smtp.command("NOOP"), 250, "2.0.0")
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org>"), 250, "2.1.0")
        _assert_reply(smtp.command(f"RCPT TO:<{alice}>"), 250, "2.1.5")
        assert smtp.command("DATA")[-1].startswith("354 ")
        _assert_reply(smtp.command(_message(alice, "after garbage") + b"."), 250, "2.0.0")
    assert [r["subject"] for r in mail_system.messages_of(alice)] == ["after garbage"]


def test_too_many_unknown_commands_end_the_session_with_502_5_5_1(mail_system: MailSystem) -> None:
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        for n in range(4):
            _assert_reply(smtp.command(f"BOGUS{n}"), 500, "5.5.2")
        _assert_reply(smtp.command("BOGUS4"), 502, "5.5.1")
        assert smtp.at_eof()


def test_rcpt_before_mail_gets_503_5_5_1(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        _assert_reply(smtp.command(f"RCPT TO:<{alice}>"), 503, "5.5.1")
        _assert_reply(smtp.command("NOOP"), 250, "2.0.0")
    _assert_nothing_stored(mail_system, domain)


def test_data_before_rcpt_gets_503_5_5_1(mail_system: MailSystem, domain: str) -> None:
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        _assert_reply(smtp.command("DATA"), 503, "5.5.1")
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org>"), 250, "2.1.0")
        _assert_reply(smtp.command("DATA"), 503, "5.5.1")
        _assert_reply(smtp.command(f"RCPT TO:<nobody@{domain}>"), 550, "5.1.1")
        _assert_reply(smtp.command("DATA"), 503, "5.5.1")  # still no accepted recipient
    _assert_nothing_stored(mail_system, domain)


def test_second_mail_from_gets_503_5_5_1(mail_system: MailSystem) -> None:
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org>"), 250, "2.1.0")
        _assert_reply(smtp.command("MAIL FROM:<carol@example.org>"), 503, "5.5.1")


def test_mail_before_ehlo_gets_503_5_5_1(mail_system: MailSystem) -> None:
    with _raw(mail_system) as smtp:
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org>"), 503, "5.5.1")


def test_malformed_addresses_get_553_or_501_with_an_enhanced_code(
    mail_system: MailSystem, domain: str
) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        for bad in (
            "MAIL FROM:<@@>",
            "MAIL FROM:<a@@b.example>",
            "MAIL FROM:",
            "MAIL FROM:<bob@example.org> SIZE=big",
        ):
            reply = smtp.command(bad)
            assert re.match(r"^(553 5\.1\.\d|501 5\.\d\.\d) ", reply[-1]), (bad, reply)
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org>"), 250, "2.1.0")
        for bad in (f"RCPT TO:<a@@{domain}>", "RCPT TO:<@@>", f"RCPT TO:<alice@{domain} x>", "RCPT TO:",
                    f"RCPT TO:<a..b@{domain}>", "RCPT TO:<a@-bad-.com>"):
            reply = smtp.command(bad)
            assert re.match(r"^(553 5\.1\.\d|501 5\.\d\.\d) ", reply[-1]), (bad, reply)
        _assert_reply(smtp.command("RCPT TO:<a@[192.0.2.1]>"), 550, "5.7.1")  # a literal is never local
        _assert_reply(smtp.command("DATA"), 503, "5.5.1")  # none of them was accepted
        _assert_reply(smtp.command(f"RCPT TO:<{alice}>"), 250, "2.1.5")
    _assert_nothing_stored(mail_system, domain)


def test_client_vanishing_in_the_middle_of_data_harms_nobody(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    for reset in (False, True):
        smtp = RawSession(mail_system.smtp_port)
        smtp.command("EHLO client.example")
        _assert_reply(smtp.command("MAIL FROM:<bob@example.org>"), 250, "2.1.0")
        _assert_reply(smtp.command(f"RCPT TO:<{alice}>"), 250, "2.1.5")
        assert smtp.command("DATA")[-1].startswith("354 ")
        partial = _message(alice, f"cut off {reset} {domain}", b"partial line\r\n" * 5000)
        smtp.sock.sendall(partial)  # and never the final dot
        smtp.close(reset=reset)
    sent = _message(alice, "complete")
    with _smtp(mail_system) as smtp:
        assert smtp.sendmail("bob@example.org", [alice], sent) == {}
    rows = mail_system.messages_of(alice)
    assert [(r["uid"], r["subject"]) for r in rows] == [(1, "complete")]
    files = [p for p in (mail_system.maildir_root / domain / "alice").rglob("*") if p.is_file()]
    assert files == [mail_system.maildir_root / rows[0]["maildir_path"]]
    assert not _subject_stored_anywhere(mail_system, f"cut off False {domain}")
    assert not _subject_stored_anywhere(mail_system, f"cut off True {domain}")


# --- enhanced status codes on every reply ---------------------------------------------------------


def test_every_reply_after_ehlo_carries_an_enhanced_status_code(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with _raw(mail_system) as smtp:
        ehlo = smtp.command("EHLO client.example")
        assert "250-ENHANCEDSTATUSCODES" in ehlo
        replies = {}
        for command in (
            "NOOP",
            "RSET",
            "VRFY alice",
            "EXPN staff",
            "HELP",
            "HELP MAIL",
            "HELP NOSUCH",
            "DATA",
            "MAIL FROM:<bob@example.org>",
            f"RCPT TO:<nobody@{domain}>",
            "RCPT TO:<x@example.org>",
            f"RCPT TO:<{alice}>",
            "MAIL FROM:<carol@example.org>",
            "RSET",
            "NOOP",
            "AUTH PLAIN",
            "QUIT",
        ):
            replies[command] = reply = smtp.command(command)
            assert reply, command
            for line in reply:
                match = ENHANCED_REPLY.match(line)
                assert match and match.group(1)[0] == match.group(2), (command, line)
    _assert_reply(replies["NOOP"], 250, "2.0.0")
    _assert_reply(replies["RSET"], 250, "2.0.0")
    _assert_reply(replies[f"RCPT TO:<{alice}>"], 250, "2.1.5")
    _assert_reply(replies["QUIT"], 221, "2.0.0")


def test_starttls_reply_carries_an_enhanced_status_code(mail_system: MailSystem) -> None:
    # Whether or not TLS is configured (220 go ahead / 454 not available), the reply comes after EHLO.
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        [line] = smtp.command("STARTTLS")
        match = ENHANCED_REPLY.match(line)
        assert match and match.group(1) in ("220", "454") and match.group(1)[0] == match.group(2), line


def test_help_lists_the_supported_commands(mail_system: MailSystem) -> None:
    with _raw(mail_system) as smtp:
        smtp.command("EHLO client.example")
        listing = smtp.command("HELP")[-1]
        for command in ("DATA", "EHLO", "HELO", "MAIL", "NOOP", "QUIT", "RCPT", "RSET"):
            assert command in listing.split(), listing
        _assert_reply(smtp.command("HELP MAIL"), 250, "2.0.0")
        assert "MAIL FROM: <address>" in smtp.command("HELP MAIL")[-1]
