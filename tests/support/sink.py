"""A scriptable SMTP server on loopback for tests of outbound delivery (aiosmtpd in its own thread).

    with SmtpSink(starttls=True) as sink:
        sink.script("RCPT", "550 5.1.1 no such user", match="nobody@")
        sink.script("DATA", "451 4.3.0 try again later", times=2)
        ...  # deliver to sink.host:sink.port
        assert sink.connections == 1
        assert sink.messages[0].tls and sink.messages[0].rcpt_tos == ["bob@example.test"]

What it offers:
- `starttls=True`: STARTTLS with a self-signed certificate (SAN: `hostname`, localhost, 127.0.0.1);
  `implicit_tls=True`: TLS from the first byte. `cert_file` is the certificate, for clients that verify.
- `users={"name": "password"}`: AUTH PLAIN/LOGIN, required before MAIL. AUTH is offered in clear
  text only when the sink has no TLS at all (a test server on loopback).
- `size_limit=n`: advertised as `SIZE n` (0: no SIZE keyword at all); `smtputf8=False` hides SMTPUTF8.
- `script(command, reply, match=None, times=None)`: answer `command` (CONNECT for the greeting, EHLO,
  HELO, MAIL, RCPT, DATA, RSET) with `reply` instead of the default. `match` is a case-insensitive
  substring of the argument (the address for MAIL/RCPT, the name for EHLO/HELO, the message for DATA);
  `times` limits how often the rule applies (None: always). `reply=DROP` closes the connection
  without an answer; for DATA that happens after the whole message arrived, before the reply.
  The first applicable rule wins.

What it records (safe to read once the client has had its answer, the reply is sent after recording):
- `connections`: how many connections were accepted since `start()`.
- `messages`: every accepted message as `ReceivedMessage` (envelope with the null sender as "",
  bytes as received after dot-unstuffing, whether TLS was on, the AUTH login, the connection number).
- `commands`: `(connection, "VERB arg")` for every command that reached the handler.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from whymail.tls import ensure_self_signed

DROP = "<drop the connection>"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    tls: bool
    helo: str
    login: str | None
    connection: int


@dataclass(slots=True)
class _Rule:
    command: str
    reply: str
    match: str | None
    times: int | None


@dataclass(slots=True)
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    rules: list[_Rule] = field(default_factory=list)
    connections: int = 0
    messages: list[ReceivedMessage] = field(default_factory=list)
    commands: list[tuple[int, str]] = field(default_factory=list)
    open_connections: int = 0
    holding: bool = False  # `hold()`: DATA replies wait until `release()`
    held: int = 0  # DATA replies waiting right now

    def take_rule(self, command: str, argument: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule.command != command or rule.times == 0:
                    continue
                if rule.match is not None and rule.match.lower() not in argument.lower():
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule.reply
        return None


def _uses_tls(server: SMTP) -> bool:
    return server.transport is not None and server.transport.get_extra_info("ssl_object") is not None


class _SinkSMTP(SMTP):
    """aiosmtpd's server plus a scripted greeting, a command log and a connection number."""

    def __init__(self, handler: _Handler, state: _State, number: int, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.sink_state = state
        self.connection_number = number
        self._greeted = False
        self._opened = False

    def connection_made(self, transport) -> None:
        if not self._opened:  # not again after STARTTLS
            self._opened = True
            with self.sink_state.lock:
                self.sink_state.open_connections += 1
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        if self._opened:
            self._opened = False
            with self.sink_state.lock:
                self.sink_state.open_connections -= 1
        super().connection_lost(error)

    async def push(self, status) -> None:
        if not self._greeted:
            self._greeted = True
            scripted = self.sink_state.take_rule("CONNECT", "")
            if scripted == DROP:
                assert self.transport is not None
                self.transport.abort()
                return
            if scripted is not None:
                status = scripted
        await super().push(status)

    async def _call_handler_hook(self, command: str, *args):
        argument = " ".join(str(a) for a in args if isinstance(a, str))
        with self.sink_state.lock:
            self.sink_state.commands.append((self.connection_number, f"{command} {argument}".strip()))
        return await super()._call_handler_hook(command, *args)

    async def smtp_STARTTLS(self, arg: str) -> None:
        with self.sink_state.lock:
            self.sink_state.commands.append((self.connection_number, "STARTTLS"))
        await super().smtp_STARTTLS(arg)


class _Handler:
    def __init__(self, state: _State, reply_delay: float = 0.0) -> None:
        self.state = state
        self.reply_delay = reply_delay

    @staticmethod
    def _drop(server: SMTP) -> str:
        assert server.transport is not None
        server.transport.abort()  # no reply reaches the client: abort() drops what is unsent
        return "421 4.4.2 connection dropped"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        scripted = self.state.take_rule("EHLO", hostname)
        if scripted == DROP:
            return [self._drop(server)]
        if scripted is not None:
            return [scripted]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        scripted = self.state.take_rule("HELO", hostname)
        if scripted == DROP:
            return self._drop(server)
        if scripted is not None:
            return scripted
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        scripted = self.state.take_rule("MAIL", address)
        if scripted == DROP:
            return self._drop(server)
        if scripted is not None and not scripted.startswith("2"):
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return scripted or "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        scripted = self.state.take_rule("RCPT", address)
        if scripted == DROP:
            return self._drop(server)
        if scripted is not None and not scripted.startswith("2"):
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return scripted or "250 2.1.5 Ok"

    async def handle_RSET(self, server, session, envelope):
        scripted = self.state.take_rule("RSET", "")
        if scripted == DROP:
            return self._drop(server)
        return scripted or "250 2.0.0 Ok"

    async def handle_DATA(self, server, session, envelope):
        content: bytes = envelope.original_content or b""
        scripted = self.state.take_rule("DATA", content.decode("utf-8", "replace"))
        if scripted == DROP:
            return self._drop(server)
        if scripted is not None and not scripted.startswith("2"):
            return scripted
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        if self.state.holding:
            with self.state.lock:
                self.state.held += 1
            try:
                while self.state.holding and server.transport is not None and not server.transport.is_closing():
                    await asyncio.sleep(0.005)  # the test thread flips `holding`; checked every 5 ms
            finally:
                with self.state.lock:
                    self.state.held -= 1
        if server.transport is None or server.transport.is_closing():
            # A client that went away before the answer never had the message accepted.
            return self._drop(server)
        message = ReceivedMessage(
            mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,  # the null sender
            rcpt_tos=list(envelope.rcpt_tos),
            data=content,
            mail_options=list(envelope.mail_options),
            tls=_uses_tls(server),
            helo=session.host_name or "",
            login=session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            connection=server.connection_number,
        )
        with self.state.lock:
            self.state.messages.append(message)
        return scripted or f"250 2.0.0 Ok: queued as {len(self.state.messages)}"


class _Controller(Controller):
    """Binds port 0 and learns the real port before aiosmtpd's start-up probe connects."""

    def __init__(self, handler: _Handler, state: _State, host: str = "127.0.0.1", port: int = 0, **kwargs) -> None:
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self.sink_state = state
        self._factory_calls = 0
        self.counting = False

    def factory(self) -> SMTP:
        self._factory_calls += 1
        if self.counting:
            with self.sink_state.lock:
                self.sink_state.connections += 1
        return _SinkSMTP(self.handler, self.sink_state, self._factory_calls - 1, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """A test SMTP server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        hostname: str = "sink.test",
        starttls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        size_limit: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        reply_delay: float = 0.0,
        smtputf8: bool = True,
    ) -> None:
        self.hostname = hostname
        self.host = host
        self.port = port
        self.users = dict(users or {})
        self._state = _State()
        self._dir = Path(tempfile.mkdtemp(prefix="whymail-sink-"))
        self.cert_file, key_file = ensure_self_signed(self._dir, hostname)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert_file, key_file)
        kwargs: dict = {
            "server_hostname": hostname,
            "ident": "test sink",
            "data_size_limit": size_limit or None,
            "enable_SMTPUTF8": smtputf8,
            # Without users AUTH is hidden until TLS; with users it is offered in clear text only
            # on a sink that has no TLS at all.
            "auth_require_tls": not self.users or starttls or implicit_tls,
        }
        if self.users:
            kwargs.update(auth_required=True, authenticator=self._authenticate)
        if starttls:
            kwargs["tls_context"] = tls
        if implicit_tls:
            kwargs["ssl_context"] = tls
        self._controller = _Controller(
            _Handler(self._state, reply_delay), self._state, host=host, port=port, **kwargs
        )

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    # --- lifecycle

    def start(self) -> SmtpSink:
        self._controller.start()
        self.port = self._controller.port
        self._controller.counting = True  # the start-up probe above is not a client connection
        return self

    def stop(self) -> None:
        self._controller.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- scripting and inspection

    @property
    def address(self) -> str:
        """`127.0.0.1:port`, the form RelayConfig.smarthost takes."""
        return f"{self.host}:{self.port}"

    def script(self, command: str, reply: str, *, match: str | None = None, times: int | None = None) -> None:
        """Answer `command` with `reply` (or DROP) while the rule applies; see the module docstring."""
        with self._state.lock:
            self._state.rules.append(_Rule(command.upper(), reply, match, times))

    def hold(self) -> None:
        """Hold back every DATA reply (the message has arrived, the client waits) until `release()`."""
        self._state.holding = True

    def release(self) -> None:
        self._state.holding = False

    @property
    def held(self) -> int:
        """DATA replies held back right now."""
        return self._state.held

    @property
    def open_connections(self) -> int:
        return self._state.open_connections

    def clear_scripts(self) -> None:
        with self._state.lock:
            self._state.rules.clear()

    def client_tls_context(self, verify: bool = True) -> ssl.SSLContext:
        """A client context that trusts this sink's certificate (and checks it when `verify`)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.cert_file))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def connections(self) -> int:
        with self._state.lock:
            return self._state.connections

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._state.lock:
            return list(self._state.messages)

    @property
    def commands(self) -> list[tuple[int, str]]:
        with self._state.lock:
            return list(self._state.commands)

    def verbs(self) -> list[str]:
        """Just the command names in order, e.g. ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]."""
        return [line.split(" ", 1)[0] for _, line in self.commands]
