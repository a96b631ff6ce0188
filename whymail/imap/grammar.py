"""`parse_command`: one complete IMAP command (literals inlined) to a typed command (RFC 3501 §9)."""

from __future__ import annotations

from collections.abc import Callable

from whymail.imap import commands as c
from whymail.imap.errors import ImapParseError, excerpt
from whymail.imap.lexer import MAX_MODSEQ, Cursor
from whymail.imap.parse_fetch import parse_fetch_items, parse_fetch_modifiers
from whymail.imap.parse_search import parse_search_program, parse_search_return

MAX_ID_PAIRS = 30  # RFC 2971 §3.3
MAX_LIST_PATTERNS = 100
MAX_APPEND_MESSAGES = 100


def parse_command(data: bytes) -> c.Command:
    """Parse `tag SP command [SP arguments]` with literals inline as `{n}` CRLF data.

    A trailing CRLF is allowed. Raises ImapParseError, with the tag when it could be read.
    """
    cur = Cursor(data)
    cur.tag = cur.tag_token()
    cur.sp()
    name = cur.keyword("a command name")
    uid = False
    if name == "UID":
        cur.sp()
        uid = True
        name = cur.keyword("a UID command")
        if name not in _UID_COMMANDS:
            raise cur.error(f"unknown UID command {excerpt(name)}")
    handler = _HANDLERS.get(name)
    if handler is None:
        raise cur.error(f"unknown command {excerpt(name)}")
    try:
        command = handler(cur, cur.tag, uid)
    except ValueError as exc:  # a dataclass invariant
        raise cur.error(str(exc)) from None
    except ImapParseError as exc:
        raise exc.with_tag(cur.tag) from None
    cur.end()
    return command


def _no_args(cls: Callable[[str], c.Command]) -> Callable[[Cursor, str, bool], c.Command]:
    return lambda cur, tag, uid: cls(tag)


def _mailbox_only(cls: Callable[[str, str], c.Command]) -> Callable[[Cursor, str, bool], c.Command]:
    def parse(cur: Cursor, tag: str, uid: bool) -> c.Command:
        cur.sp()
        return cls(tag, cur.mailbox())

    return parse


def _authenticate(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    mechanism = cur.keyword("a SASL mechanism")
    initial = None
    if not cur.at_end():
        cur.sp()
        initial = cur.atom("a base64 initial response")
        if initial != "=" and not all(ch.isalnum() or ch in "+/=" for ch in initial):
            raise cur.error("initial response is not base64")
    return c.Authenticate(tag, mechanism, initial)


def _login(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    username = cur.astring_text()
    cur.sp()
    return c.Login(tag, username, cur.astring_text())


def _select(read_only: bool) -> Callable[[Cursor, str, bool], c.Command]:
    def parse(cur: Cursor, tag: str, uid: bool) -> c.Command:
        cur.sp()
        mailbox = cur.mailbox()
        condstore = False
        qresync = None
        if not cur.at_end():
            cur.sp()
            cur.expect(b"(", "select parameters")
            while not cur.maybe(b")"):
                if condstore or qresync:
                    cur.sp()
                param = cur.keyword("a select parameter")
                if param == "CONDSTORE" and not condstore:
                    condstore = True
                elif param == "QRESYNC" and qresync is None:
                    cur.sp()
                    qresync = _qresync(cur)
                else:
                    raise cur.error("unknown or repeated select parameter")
        return c.Select(tag, mailbox, read_only, condstore, qresync)

    return parse


def _qresync(cur: Cursor) -> c.QresyncParams:
    cur.expect(b"(")
    uidvalidity = cur.nz_number("a UIDVALIDITY")
    cur.sp()
    modseq = cur.number(MAX_MODSEQ, "a mod-sequence")
    known_uids = seq_match = None
    if cur.maybe(b" ") and cur.peek() != 0x28:
        known_uids = cur.sequence_set()
        cur.maybe(b" ")
    if cur.maybe(b"("):
        known_seqs = cur.sequence_set()
        cur.sp()
        seq_match = (known_seqs, cur.sequence_set())
        cur.expect(b")")
    cur.expect(b")")
    return c.QresyncParams(uidvalidity, modseq, known_uids, seq_match)


def _create(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    mailbox = cur.mailbox()
    special_use: tuple[str, ...] = ()
    if not cur.at_end():
        # RFC 6154 §3: CREATE name (USE (\Sent \Archive))
        cur.sp()
        cur.expect(b"(USE ", "(USE (...))")
        special_use = cur.flag_list()
        cur.expect(b")")
    return c.Create(tag, mailbox, special_use)


def _rename(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    return c.Rename(tag, old, cur.mailbox())


def _list(cur: Cursor, tag: str, uid: bool) -> c.Command:
    # RFC 5258 §6: LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
    cur.sp()
    selection: tuple[str, ...] = ()
    if cur.peek() == 0x28:
        selection = cur.keyword_list("LIST selection options")
        cur.sp()
    reference = cur.list_mailbox()
    cur.sp()
    if cur.maybe(b"("):
        patterns = [cur.list_mailbox()]
        while not cur.maybe(b")"):
            cur.sp()
            patterns.append(cur.list_mailbox())
            if len(patterns) > MAX_LIST_PATTERNS:
                raise cur.error("too many LIST patterns")
    else:
        patterns = [cur.list_mailbox()]
    returns: list[str] = []
    return_status = None
    if not cur.at_end():
        cur.sp()
        cur.expect(b"RETURN (", "RETURN (...)")
        while not cur.maybe(b")"):
            if returns or return_status is not None:
                cur.sp()
            option = cur.keyword("a LIST return option")
            if option == "STATUS" and return_status is None:
                cur.sp()
                return_status = _status_items(cur)
            else:
                returns.append(option)
    return c.List(tag, reference, tuple(patterns), selection, tuple(returns), return_status)


def _lsub(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    reference = cur.list_mailbox()
    cur.sp()
    return c.Lsub(tag, reference, cur.list_mailbox())


def _status_items(cur: Cursor) -> tuple[str, ...]:
    items = cur.keyword_list("status items")
    if not items or any(item not in c.STATUS_ITEMS for item in items):
        raise cur.error("unknown or missing STATUS item")
    return items


def _status(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    return c.Status(tag, mailbox, _status_items(cur))


def _append(cur: Cursor, tag: str, uid: bool) -> c.Command:
    # RFC 3501 §6.3.11, RFC 3502 MULTIAPPEND: mailbox 1*(SP [flag-list SP] [date-time SP] literal)
    cur.sp()
    mailbox = cur.mailbox()
    messages: list[c.AppendMessage] = []
    while not cur.at_end() or not messages:
        if len(messages) >= MAX_APPEND_MESSAGES:
            raise cur.error("too many messages in one APPEND")
        cur.sp()
        flags: tuple[str, ...] = ()
        internal_date = None
        if cur.peek() == 0x28:
            flags = cur.flag_list()
            cur.sp()
        if cur.peek() == 0x22:
            internal_date = cur.date_time()
            cur.sp()
        messages.append(c.AppendMessage(flags, internal_date, cur.literal()))
    return c.Append(tag, mailbox, tuple(messages))


def _search(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    return_options = None
    if cur.maybe(b"RETURN "):
        return_options = parse_search_return(cur)
        cur.sp()
    charset, key = parse_search_program(cur)
    return c.Search(tag, key, charset, return_options, uid)


def _fetch(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    sequence_set = cur.sequence_set()
    cur.sp()
    items = parse_fetch_items(cur)
    changed_since, vanished = None, False
    if not cur.at_end():
        cur.sp()
        changed_since, vanished = parse_fetch_modifiers(cur)
        if vanished and not uid:
            raise cur.error("VANISHED is only allowed in UID FETCH")
    return c.Fetch(tag, sequence_set, items, uid, changed_since, vanished)


def _store(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    sequence_set = cur.sequence_set()
    cur.sp()
    unchanged_since = None
    if cur.maybe(b"(UNCHANGEDSINCE "):
        unchanged_since = cur.number(MAX_MODSEQ, "a mod-sequence")
        cur.expect(b") ")
    mode = "+" if cur.maybe(b"+") else "-" if cur.maybe(b"-") else ""
    cur.expect(b"FLAGS", "FLAGS, +FLAGS or -FLAGS")
    silent = cur.maybe(b".SILENT")
    cur.sp()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
    else:
        found = [cur.flag()]
        while cur.maybe(b" "):
            found.append(cur.flag())
        flags = tuple(found)
    return c.Store(tag, sequence_set, mode, flags, silent, unchanged_since, uid)


def _copy_or_move(cls: type[c.Copy] | type[c.Move]) -> Callable[[Cursor, str, bool], c.Command]:
    def parse(cur: Cursor, tag: str, uid: bool) -> c.Command:
        cur.sp()
        sequence_set = cur.sequence_set()
        cur.sp()
        return cls(tag, sequence_set, cur.mailbox(), uid)

    return parse


def _expunge(cur: Cursor, tag: str, uid: bool) -> c.Command:
    if not uid:
        return c.Expunge(tag)
    cur.sp()
    return c.UidExpunge(tag, cur.sequence_set())


def _id(cur: Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    if cur.maybe(b"NIL"):
        return c.Id(tag, None)
    cur.expect(b"(", "( or NIL")
    pairs: list[tuple[str, str | None]] = []
    while not cur.maybe(b")"):
        if pairs:
            cur.sp()
        if len(pairs) >= MAX_ID_PAIRS:
            raise cur.error("too many ID fields (RFC 2971 allows 30)")
        field = cur.string_text()
        cur.sp()
        value = cur.nstring()
        pairs.append((field, None if value is None else cur.text(value)))
    return c.Id(tag, tuple(pairs))


def _enable(cur: Cursor, tag: str, uid: bool) -> c.Command:
    capabilities = []
    while cur.maybe(b" "):
        capabilities.append(cur.keyword("a capability"))
    if not capabilities:
        raise cur.error("ENABLE needs at least one capability")
    return c.Enable(tag, tuple(capabilities))


_UID_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"})

_HANDLERS: dict[str, Callable[[Cursor, str, bool], c.Command]] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTls),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select(read_only=False),
    "EXAMINE": _select(read_only=True),
    "CREATE": _create,
    "DELETE": _mailbox_only(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_only(c.Subscribe),
    "UNSUBSCRIBE": _mailbox_only(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy_or_move(c.Copy),
    "MOVE": _copy_or_move(c.Move),
    "IDLE": _no_args(c.Idle),
    "NAMESPACE": _no_args(c.Namespace),
    "ID": _id,
    "ENABLE": _enable,
}
