"""The sans-I/O IMAP session: typed command in, typed responses out (RFC 3501 §3, §6).

`Session.handle(command)` returns the responses of one command in order, the tagged one last. The
gateway feeds AUTHENTICATE continuation lines to `continue_authenticate` and drives IDLE with
`idle_wait` / `idle_done`. The session never raises out of `handle`: refusals are `NO`/`BAD`, and
an unexpected error is `NO [SERVERBUG]` (logged with the session id).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import itertools
import logging

from whymail.imap import commands as c
from whymail.imap import mailbox_cmds, message_cmds
from whymail.imap.errors import CommandError, ImapParseError
from whymail.imap.responses import (
    BadCharsetCode,
    Capability,
    CapabilityCode,
    Code,
    Continuation,
    Enabled,
    Id,
    Namespace,
    NamespaceEntry,
    Response,
    Tagged,
    Untagged,
)
from whymail.imap.storage import HIERARCHY_DELIMITER, Account, Authenticator, MailStorage, StorageError
from whymail.imap.view import BadSequence, MailboxView
from whymail.ratelimit import ConnectionCounter

log = logging.getLogger(__name__)
_session_ids = itertools.count(1)

SERVER_ID = (("name", "WhyMail"), ("vendor", "WhyMail"), ("support-url", "https://example.invalid/whymail"))
BASE_CAPABILITIES = (
    "IMAP4rev1", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "MOVE", "UNSELECT", "NAMESPACE", "ID",
    "ENABLE", "SPECIAL-USE", "CHILDREN", "CONDSTORE",
)
AUTH_MECHANISMS = ("PLAIN", "LOGIN")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = (c.Capability, c.Noop, c.Logout, c.Id)
_NOT_AUTHENTICATED = (c.StartTls, c.Authenticate, c.Login)
_AUTHENTICATED = (
    c.Enable, c.Select, c.Create, c.Delete, c.Rename, c.Subscribe, c.Unsubscribe, c.List, c.Lsub,
    c.Status, c.Append, c.Namespace, c.Idle,
)
_SELECTED = (c.Check, c.Close, c.Unselect, c.Expunge, c.UidExpunge, c.Search, c.Fetch, c.Store, c.Copy, c.Move)
# RFC 3501 §7.4.1: no EXPUNGE while sequence numbers are in use by the command (we include COPY).
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Copy)


class Session:
    """One IMAP connection's protocol state, given a storage and an authenticator."""

    def __init__(
        self,
        storage: MailStorage,
        authenticator: Authenticator,
        *,
        tls_active: bool = False,
        starttls_available: bool = True,
        allow_plaintext_login: bool = False,
        remote_ip: str = "",
        user_connections: ConnectionCounter | None = None,
    ) -> None:
        self.storage = storage
        self.authenticator = authenticator
        self.tls_active = tls_active
        self.starttls_available = starttls_available
        self.allow_plaintext_login = allow_plaintext_login
        self.remote_ip = remote_ip
        # Logged-in sessions per user; the owner of the counter releases `account.user_id` at the end.
        self.user_connections = user_connections
        self.session_id = next(_session_ids)
        self.state = State.NOT_AUTHENTICATED
        self.account: Account | None = None
        self.view: MailboxView | None = None
        self.condstore = False
        self.failed_logins = 0
        self._auth: tuple[str, str, list[str]] | None = None  # (tag, mechanism, answers so far)
        self._idle_tag: str | None = None

    # --- public API ---------------------------------------------------------------------------

    @property
    def awaiting_continuation(self) -> bool:
        """True while AUTHENTICATE waits for a client line (feed it to `continue_authenticate`)."""
        return self._auth is not None

    @property
    def idling(self) -> bool:
        return self._idle_tag is not None

    def capabilities(self) -> tuple[str, ...]:
        """What CAPABILITY announces in the current state (RFC 3501 §6.1.1, RFC 2595)."""
        caps = list(BASE_CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if not self.tls_active and self.starttls_available:
                caps.append("STARTTLS")
            if self._plaintext_ok():
                caps.extend(f"AUTH={m}" for m in AUTH_MECHANISMS)
            else:
                caps.append("LOGINDISABLED")
        return tuple(caps)

    def tls_started(self) -> None:
        """The gateway finished the STARTTLS handshake."""
        self.tls_active = True

    async def handle(self, command: c.Command) -> list[Response]:
        """Responses to one command, tagged one last; never raises."""
        tag = command.tag
        interrupted = self._interrupt("expected DONE or an AUTHENTICATE response")
        return [*interrupted, *await self._handle(command, tag)]

    async def _handle(self, command: c.Command, tag: str) -> list[Response]:
        try:
            self._check_state(command)
            responses = await self._dispatch(command)
            if self.view is not None and not isinstance(command, c.Idle):
                responses = await self._with_updates(responses, allow_expunge=not isinstance(command, _NO_EXPUNGE))
            return responses
        except CommandError as err:
            out = [Tagged(tag, err.status, err.text, err.code)]  # type: ignore[arg-type]
            if self.view is not None and err.status == "NO":
                out = await self._with_updates(out, allow_expunge=not isinstance(command, _NO_EXPUNGE))
            return out
        except BadSequence as err:
            return [Tagged(tag, "BAD", str(err))]
        except StorageError as err:
            return [Tagged(tag, "NO", err.text, _code(err.code))]
        except Exception:
            log.exception("IMAP session %s: %s failed", self.session_id, type(command).__name__)
            return [Tagged(tag, "NO", "internal server error", Code("SERVERBUG"))]

    def parse_error(self, error: ImapParseError) -> list[Response]:
        """The reply to a command the parser rejected (`tag BAD` or `* BAD`)."""
        code = _parse_error_code(error.code) if error.code else None
        interrupted = self._interrupt(error.text)
        if interrupted:  # a bad line during IDLE or AUTHENTICATE ends that command (RFC 2177 §3)
            return interrupted
        if error.tag:
            # RFC 3501 §6.4.4: an unsupported charset is NO [BADCHARSET], not BAD.
            status = "NO" if isinstance(code, BadCharsetCode) else "BAD"
            return [Tagged(error.tag, status, error.text, code)]
        return [Untagged("BAD", error.text, code)]

    async def continue_authenticate(self, line: bytes) -> list[Response]:
        """One client line of the AUTHENTICATE exchange (RFC 3501 §6.2.2); never raises."""
        if self._auth is None:
            return [Untagged("BAD", "no authentication in progress")]
        tag, mechanism, answers = self._auth
        text = line.rstrip(b"\r\n")
        if text == b"*":
            self._auth = None
            return [Tagged(tag, "BAD", "AUTHENTICATE cancelled")]
        try:
            decoded = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._auth = None
            return [Tagged(tag, "BAD", "invalid base64 in AUTHENTICATE response")]
        answers.append(decoded)
        try:
            return await self._auth_step(tag, mechanism, answers)
        except Exception:
            self._auth = None
            log.exception("IMAP session %s: AUTHENTICATE failed", self.session_id)
            return [Tagged(tag, "NO", "internal server error", Code("SERVERBUG"))]

    async def idle_wait(self, timeout: float) -> list[Response]:
        """While IDLE: wait up to `timeout` seconds for mailbox changes and return their updates."""
        if self._idle_tag is None:
            return []
        try:
            view = self.view
            if view is None:
                await asyncio.sleep(timeout)
                return []
            if not view.pending_expunge:
                await self.storage.wait_changes(self._account(), view.mailbox_id, view.modseq, timeout)
            return await self._updates(allow_expunge=True)
        except StorageError:
            await asyncio.sleep(timeout)  # e.g. the mailbox was deleted: DONE and the next command tell
            return []
        except Exception:
            log.exception("IMAP session %s: IDLE wait failed", self.session_id)
            return []

    async def idle_done(self) -> list[Response]:
        """The client sent DONE: final updates and the tagged OK of IDLE."""
        tag, self._idle_tag = self._idle_tag, None
        if tag is None:
            return [Untagged("BAD", "not idling")]
        try:
            out = await self._updates(allow_expunge=True) if self.view is not None else []
        except Exception:
            log.exception("IMAP session %s: IDLE updates failed", self.session_id)
            out = []
        return [*out, Tagged(tag, "OK", "IDLE terminated")]

    # --- plumbing -----------------------------------------------------------------------------

    def _interrupt(self, text: str) -> list[Response]:
        """End a pending IDLE or AUTHENTICATE with `tag BAD` when something else arrives instead."""
        if self._idle_tag is not None:
            tag, self._idle_tag = self._idle_tag, None
            return [Tagged(tag, "BAD", text)]
        if self._auth is not None:
            tag, self._auth = self._auth[0], None
            return [Tagged(tag, "BAD", text)]
        return []

    def _account(self) -> Account:
        assert self.account is not None
        return self.account

    def _plaintext_ok(self) -> bool:
        return self.tls_active or self.allow_plaintext_login

    def _check_state(self, command: c.Command) -> None:
        if self.state is State.LOGOUT:
            raise CommandError("BAD", "logging out")
        if isinstance(command, _ANY):
            return
        if isinstance(command, _NOT_AUTHENTICATED):
            if self.state is not State.NOT_AUTHENTICATED:
                raise CommandError("BAD", "already authenticated")
            return
        if self.state is State.NOT_AUTHENTICATED:
            raise CommandError("BAD", "authenticate first")
        if isinstance(command, _SELECTED) and self.state is not State.SELECTED:
            raise CommandError("BAD", "no mailbox selected")

    async def _updates(self, *, allow_expunge: bool) -> list[Response]:
        view = self.view
        assert view is not None
        changes = await self.storage.changes_since(self._account(), view.mailbox_id, view.modseq)
        return view.apply(changes, allow_expunge=allow_expunge, condstore=self.condstore)

    async def _with_updates(self, responses: list[Response], *, allow_expunge: bool) -> list[Response]:
        """Insert pending mailbox updates before the tagged response (RFC 3501 §7.4.1)."""
        try:
            updates = await self._updates(allow_expunge=allow_expunge)
        except StorageError:
            updates = []  # e.g. the mailbox was deleted under us; the next command tells
        except Exception:  # never let an update failure hide the command's own result
            log.exception("IMAP session %s: mailbox updates failed", self.session_id)
            updates = []
        if not updates:
            return responses
        return [*responses[:-1], *updates, responses[-1]]

    async def _dispatch(self, command: c.Command) -> list[Response]:
        handler = _HANDLERS.get(type(command))
        if handler is not None:
            return await handler(self, command)
        if isinstance(command, c.Select | c.Create | c.Delete | c.Rename | c.Subscribe | c.Unsubscribe
                      | c.List | c.Lsub | c.Status | c.Append):
            return await mailbox_cmds.handle(self, command)
        return await message_cmds.handle(self, command)

    # --- any state ----------------------------------------------------------------------------

    async def _capability(self, cmd: c.Capability) -> list[Response]:
        return [Capability(self.capabilities()), Tagged(cmd.tag, "OK", "CAPABILITY completed")]

    async def _noop(self, cmd: c.Noop | c.Check) -> list[Response]:
        return [Tagged(cmd.tag, "OK", f"{type(cmd).__name__.upper()} completed")]

    async def _logout(self, cmd: c.Logout) -> list[Response]:
        self.state = State.LOGOUT
        self.view = None
        return [Untagged("BYE", "WhyMail logging out"), Tagged(cmd.tag, "OK", "LOGOUT completed")]

    async def _id(self, cmd: c.Id) -> list[Response]:
        return [Id(SERVER_ID), Tagged(cmd.tag, "OK", "ID completed")]

    async def _enable(self, cmd: c.Enable) -> list[Response]:
        enabled: list[str] = []
        if "CONDSTORE" in cmd.capabilities and not self.condstore:
            self.condstore = True
            enabled.append("CONDSTORE")
        return [Enabled(tuple(enabled)), Tagged(cmd.tag, "OK", "ENABLE completed")]

    async def _namespace(self, cmd: c.Namespace) -> list[Response]:
        personal = (NamespaceEntry("", HIERARCHY_DELIMITER),)
        return [Namespace(personal, None, None), Tagged(cmd.tag, "OK", "NAMESPACE completed")]

    async def _idle(self, cmd: c.Idle) -> list[Response]:
        self._idle_tag = cmd.tag
        out: list[Response] = [Continuation("idling")]
        if self.view is not None:
            out.extend(await self._updates(allow_expunge=True))
        return out

    # --- not authenticated --------------------------------------------------------------------

    async def _starttls(self, cmd: c.StartTls) -> list[Response]:
        if self.tls_active or not self.starttls_available:
            raise CommandError("BAD", "STARTTLS not available")
        return [Tagged(cmd.tag, "OK", "begin TLS negotiation now")]

    async def _login(self, cmd: c.Login) -> list[Response]:
        if not self._plaintext_ok():
            raise CommandError("NO", "use STARTTLS first", Code("PRIVACYREQUIRED"))
        return await self._finish_login(cmd.tag, cmd.username, cmd.password, "LOGIN")

    async def _finish_login(self, tag: str, username: str, password: str, what: str) -> list[Response]:
        account = await self.authenticator.authenticate(username, password, remote_ip=self.remote_ip)
        if account is None:
            self.failed_logins += 1
            raise CommandError("NO", "invalid credentials", Code("AUTHENTICATIONFAILED"))
        if self.user_connections is not None and not self.user_connections.acquire(str(account.user_id)):
            raise CommandError("NO", "too many connections for this user", Code("LIMIT"))
        self.account = account
        self.state = State.AUTHENTICATED
        return [Tagged(tag, "OK", f"{what} completed", CapabilityCode(self.capabilities()))]

    async def _authenticate(self, cmd: c.Authenticate) -> list[Response]:
        if cmd.mechanism not in AUTH_MECHANISMS:
            raise CommandError("NO", f"unsupported mechanism {cmd.mechanism}")
        if not self._plaintext_ok():
            raise CommandError("NO", "use STARTTLS first", Code("PRIVACYREQUIRED"))
        answers: list[str] = []
        if cmd.initial_response is not None:  # RFC 4959 SASL-IR; "=" is an empty response
            try:
                raw = b"" if cmd.initial_response == "=" else base64.b64decode(cmd.initial_response, validate=True)
                answers.append(raw.decode("utf-8"))
            except (binascii.Error, ValueError):
                raise CommandError("BAD", "invalid base64 initial response") from None
        self._auth = (cmd.tag, cmd.mechanism, answers)
        return await self._auth_step(cmd.tag, cmd.mechanism, answers)

    async def _auth_step(self, tag: str, mechanism: str, answers: list[str]) -> list[Response]:
        """Next challenge, or the result once the mechanism has all it needs."""
        if mechanism == "PLAIN":
            if not answers:
                return [Continuation("")]
            self._auth = None
            parts = answers[0].split("\x00")
            if len(parts) != 3:
                return [Tagged(tag, "BAD", "malformed PLAIN response")]
            authzid, authcid, password = parts
            if authzid and authzid != authcid:
                return [Tagged(tag, "NO", "cannot act as another user", Code("AUTHORIZATIONFAILED"))]
            return await self._login_result(tag, authcid, password)
        # LOGIN: "Username:" then "Password:" (draft-murchison-sasl-login)
        if len(answers) < 2:
            prompt = b"Username:" if not answers else b"Password:"
            return [Continuation(base64.b64encode(prompt).decode("ascii"))]
        self._auth = None
        return await self._login_result(tag, answers[0], answers[1])

    async def _login_result(self, tag: str, username: str, password: str) -> list[Response]:
        try:
            return await self._finish_login(tag, username, password, "AUTHENTICATE")
        except CommandError as err:
            return [Tagged(tag, err.status, err.text, err.code)]  # type: ignore[arg-type]


def _parse_error_code(text: str) -> Code | BadCharsetCode:
    name, _, argument = text.partition(" ")
    if name.upper() == "BADCHARSET":
        return BadCharsetCode(tuple(argument.strip("()").split()))
    try:
        return Code(name, argument or None)
    except ValueError:
        return Code("CLIENTBUG")


def _code(name: str) -> Code:
    try:
        return Code(name)
    except ValueError:
        return Code("SERVERBUG")


_HANDLERS = {
    c.Capability: Session._capability,
    c.Noop: Session._noop,
    c.Check: Session._noop,
    c.Logout: Session._logout,
    c.Id: Session._id,
    c.Enable: Session._enable,
    c.Namespace: Session._namespace,
    c.Idle: Session._idle,
    c.StartTls: Session._starttls,
    c.Login: Session._login,
    c.Authenticate: Session._authenticate,
}
