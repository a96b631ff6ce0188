"""Concurrent IMAP sessions (IDLE sees another session's changes) and bad input on a raw socket."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from tests.integration.conftest import TEST_PASSWORD, MailSystem

IDLE_WAIT = 1.0  # seconds a change may take to reach an idling session


def _deliver(system: MailSystem, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", [rcpt], f"From: sender@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhi\r\n")


def _message(subject: str) -> bytes:
    return f"From: a@example.org\r\nTo: b@example.net\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def _connect(system: MailSystem, user: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=system.cluster.imap_port, ssl=False, timeout=30)
    client.login(user, TEST_PASSWORD)
    return client


def _idle_until(client: IMAPClient, wanted: bytes, timeout: float = IDLE_WAIT) -> list:
    """idle_check until an untagged response with `wanted` arrives or `timeout` passes."""
    deadline = time.monotonic() + timeout
    seen: list = []
    while (left := deadline - time.monotonic()) > 0:
        seen.extend(client.idle_check(timeout=left))
        if any(len(r) > 1 and r[1] == wanted for r in seen):
            return seen
    return seen


@pytest.fixture
def pair(mail_system: MailSystem, domain: str) -> Iterator[tuple[IMAPClient, IMAPClient, str]]:
    user = f"shared@{domain}"
    mail_system.add_user(user)
    a, b = _connect(mail_system, user), _connect(mail_system, user)
    try:
        yield a, b, user
    finally:
        for client in (a, b):
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass


def test_idle_sees_exists_fetch_and_expunge_from_another_session(pair, mail_system: MailSystem) -> None:
    a, b, user = pair
    b.append("INBOX", _message("already there"))
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    a.idle()
    try:
        # a delivery over SMTP
        _deliver(mail_system, user, "new while idling")
        seen = _idle_until(a, b"EXISTS")
        assert (2, b"EXISTS") in seen, seen

        # an APPEND by session B
        b.append("INBOX", _message("appended by b"))
        seen = _idle_until(a, b"EXISTS")
        assert (3, b"EXISTS") in seen, seen

        # B sets a flag: A sees the FETCH with the new flags
        uids = sorted(b.search("ALL"))
        b.add_flags([uids[0]], [b"\\Flagged"])
        seen = _idle_until(a, b"FETCH")
        fetches = [r for r in seen if len(r) > 2 and r[1] == b"FETCH"]
        assert fetches and fetches[0][0] == 1, seen
        assert b"\\Flagged" in dict(zip(fetches[0][2][0::2], fetches[0][2][1::2], strict=False))[b"FLAGS"]

        # B expunges the second message: A sees EXPUNGE 2
        b.add_flags([uids[1]], [b"\\Deleted"])
        b.expunge()
        seen = _idle_until(a, b"EXPUNGE")
        assert (2, b"EXPUNGE") in seen, seen
    finally:
        a.idle_done()
    a_uids = sorted(a.search("ALL"))
    assert a_uids == [uids[0], uids[2]]


def test_idle_done_returns_to_normal_commands(pair) -> None:
    a, b, _ = pair
    a.select_folder("INBOX")
    a.idle()
    assert a.idle_check(timeout=0.2) == []
    text, responses = a.idle_done()
    assert b"IDLE" in text.upper() or text
    assert a.noop()[0]


# --- raw socket -----------------------------------------------------------------------------------


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        greeting = self.line()
        assert greeting.startswith(b"* OK"), greeting

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, tag: str, text: bytes | str) -> tuple[list[bytes], bytes]:
        """Send one command line; return (untagged lines, tagged line)."""
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> tuple[list[bytes], bytes]:
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag.encode() + b" "):
                return untagged, line
            untagged.append(line)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(mail_system: MailSystem) -> Iterator[Raw]:
    conn = Raw(mail_system.cluster.imap_port)
    yield conn
    conn.close()


def test_bad_input_gets_bad_and_the_session_continues(raw: Raw, mail_system: MailSystem, domain: str) -> None:
    user = f"raw@{domain}"
    mail_system.add_user(user)

    _, tagged = raw.command("a1", "a1 FROBNICATE now")
    assert tagged.startswith(b"a1 BAD"), tagged
    _, tagged = raw.command("a2", 'a2 LOGIN "unterminated')
    assert tagged.startswith(b"a2 BAD"), tagged
    _, tagged = raw.command("a3", "a3 SELECT INBOX")
    assert tagged.startswith((b"a3 BAD", b"a3 NO")), tagged
    untagged, tagged = raw.command("a4", "a4 CAPABILITY")
    assert tagged.startswith(b"a4 OK") and any(b"IMAP4rev1" in u for u in untagged)

    _, tagged = raw.command("a5", f'a5 LOGIN "{user}" "{TEST_PASSWORD}"')
    assert tagged.startswith(b"a5 OK"), tagged
    _, tagged = raw.command("a6", f'a6 LOGIN "{user}" "{TEST_PASSWORD}"')
    assert tagged.startswith((b"a6 BAD", b"a6 NO")), tagged
    _, tagged = raw.command("a7", "a7 FETCH 1 FLAGS")
    assert tagged.startswith((b"a7 BAD", b"a7 NO")), tagged
    _, tagged = raw.command("a8", "a8 SELECT INBOX")
    assert tagged.startswith(b"a8 OK"), tagged
    for i, bad_set in enumerate((b"0", b"1:foo", b"-3", b"1,,2", b"*:", b"4294967296")):
        tag = f"s{i}"
        _, tagged = raw.command(tag, tag.encode() + b" FETCH " + bad_set + b" FLAGS")
        assert tagged.startswith(tag.encode() + b" BAD"), (bad_set, tagged)
    _, tagged = raw.command("a9", "a9 UID SEARCH ALL")
    assert tagged.startswith(b"a9 OK"), tagged
    _, tagged = raw.command("a10", "a10 NOOP")
    assert tagged.startswith(b"a10 OK"), tagged


def test_huge_literal_is_refused_without_waiting_for_it(raw: Raw, mail_system: MailSystem, domain: str) -> None:
    user = f"huge@{domain}"
    mail_system.add_user(user)
    _, tagged = raw.command("h1", f'h1 LOGIN "{user}" "{TEST_PASSWORD}"')
    assert tagged.startswith(b"h1 OK"), tagged
    raw.sock.settimeout(5)
    raw.send(b"h2 APPEND INBOX {999999999}\r\n")
    line = raw.line()  # must come at once: no "+" continuation, no wait for 1 GB
    assert line.startswith(b"h2 "), line
    assert line.startswith((b"h2 NO", b"h2 BAD")) and b"TOOBIG" in line, line
    _, tagged = raw.command("h3", "h3 NOOP")  # the refused synchronising literal never blocks the session
    assert tagged.startswith(b"h3 OK"), tagged
    # a non-synchronising one (LITERAL+) is refused at once too; RFC 7888 §4 lets the server then
    # either read and drop the announced bytes or close the connection, so nothing more is sent.
    raw.send(b"h4 APPEND INBOX {999999999+}\r\n")
    line = raw.line()
    assert line.startswith((b"h4 NO", b"h4 BAD", b"* BYE")) and b"TOOBIG" in line, line
    assert mail_system.messages_of(user) == []
