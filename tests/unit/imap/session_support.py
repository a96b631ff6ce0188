"""Helpers for the session tests: a tiny client that speaks IMAP text to a `Session`."""

from __future__ import annotations

from whymail.imap.encoder import encode_response
from whymail.imap.grammar import parse_command
from whymail.imap.memory import MemoryAuthenticator, MemoryStorage
from whymail.imap.responses import Response
from whymail.imap.session import Session

USER = "alice@example.com"
PASSWORD = "secret"

SIMPLE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.example\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)

WITH_ATTACHMENT = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Cc: Carol <carol@example.com>\r\n"
    b"Subject: =?utf-8?q?Quarterly_r=C3=A9port?=\r\n"
    b"Date: Tue, 1 Mar 2022 10:00:00 +0000\r\n"
    b"X-Priority: 1\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Numbers are up. Caf=C3=A9 budget approved.\r\n"
    b"--XYZ\r\n"
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b'Content-Disposition: attachment; filename="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQKc2VjcmV0IHBkZiBib2R5Cg==\r\n"
    b"--XYZ--\r\n"
)

NESTED = (
    b"From: Dan <dan@example.com>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Fwd: hello\r\n"
    b"Date: Wed, 2 Mar 2022 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B1"\r\n'
    b"\r\n"
    b"--B1\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"see below\r\n"
    b"--B1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Eve <eve@example.com>\r\n"
    b"Subject: inner subject\r\n"
    b"\r\n"
    b"inner body text\r\n"
    b"--B1--\r\n"
)


def make_message(subject: str, body: str = "body", sender: str = "sender@example.com") -> bytes:
    return (
        f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Date: Thu, 3 Mar 2022 12:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


def wire(responses: list[Response]) -> list[str]:
    """Responses as wire lines (CRLF stripped), literals inline, every command tag shown as `T`."""
    lines = [encode_response(r).decode("utf-8", "surrogateescape").rstrip("\r\n") for r in responses]
    return [line if line[:1] in ("*", "+") else "T " + line.split(" ", 1)[1] for line in lines]


class Client:
    """Sends command text (without tag) to a session and returns the wire lines of the answer."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.count = 0

    def next_tag(self) -> str:
        self.count += 1
        return f"a{self.count}"

    async def responses(self, line: str | bytes) -> list[Response]:
        data = line.encode() if isinstance(line, str) else line
        command = parse_command(self.next_tag().encode() + b" " + data)
        return await self.session.handle(command)

    async def run(self, line: str | bytes) -> list[str]:
        return wire(await self.responses(line))

    async def ok(self, line: str | bytes) -> list[str]:
        lines = await self.run(line)
        assert lines[-1].split(" ")[1] == "OK", lines
        return lines

    async def append(self, mailbox: str, data: bytes, flags: str = "", date: str = "") -> list[str]:
        head = f'APPEND "{mailbox}"' + (f" ({flags})" if flags else "") + (f' "{date}"' if date else "")
        return await self.run(head.encode() + b" {%d}\r\n" % len(data) + data)


def new_session(storage: MemoryStorage, **kwargs) -> Session:
    kwargs.setdefault("tls_active", True)
    return Session(storage, MemoryAuthenticator({USER: PASSWORD, "bob@example.com": "pw2"}), **kwargs)


async def logged_in(storage: MemoryStorage, **kwargs) -> Client:
    client = Client(new_session(storage, **kwargs))
    await client.ok(f"LOGIN {USER} {PASSWORD}")
    return client


async def selected(storage: MemoryStorage, mailbox: str = "INBOX") -> Client:
    client = await logged_in(storage)
    await client.ok(f'SELECT "{mailbox}"')
    return client
