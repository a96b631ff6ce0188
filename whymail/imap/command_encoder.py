"""`encode_command`: a typed command back to client wire bytes (the inverse of `parse_command`).

Used by tests (round trips), by tools that speak IMAP as a client, and to log commands canonically.
Strings become atoms when they can, quoted strings when printable ASCII, literals otherwise.
"""

from __future__ import annotations

import datetime as dt

from whymail.imap import commands as c
from whymail.imap.fetchitems import FetchAttr, FetchItem, Section
from whymail.imap.lexer import ASTRING_CHARS, LIST_CHARS, MONTHS
from whymail.imap.searchkeys import (
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
    UidKey,
)
from whymail.imap.utf7 import encode_mailbox


def encode_command(command: c.Command, literal_plus: bool = False) -> bytes:
    """Wire bytes for `command`, ending in CRLF; literals are `{n+}` when `literal_plus`."""
    enc = _Encoder(literal_plus)
    return command.tag.encode("ascii") + b" " + enc.body(command) + b"\r\n"


class _Encoder:
    def __init__(self, literal_plus: bool) -> None:
        self.plus = b"+" if literal_plus else b""

    # --- strings ---------------------------------------------------------------------------------

    def literal(self, data: bytes) -> bytes:
        return b"{%d%s}\r\n" % (len(data), self.plus) + data

    def string(self, text: str | bytes) -> bytes:
        data = text.encode("utf-8") if isinstance(text, str) else text
        if all(0x20 <= b <= 0x7E for b in data):
            return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return self.literal(data)

    def astring(self, text: str) -> bytes:
        data = text.encode("utf-8")
        if data and all(b in ASTRING_CHARS for b in data):
            return data
        return self.string(data)

    def nstring(self, text: str | None) -> bytes:
        return b"NIL" if text is None else self.string(text)

    def mailbox(self, name: str) -> bytes:
        return self.astring(encode_mailbox(name))

    def list_mailbox(self, pattern: str) -> bytes:
        data = encode_mailbox(pattern).encode("ascii")
        if data and all(b in LIST_CHARS for b in data):
            return data
        return self.string(data)

    @staticmethod
    def atoms(items: tuple[str, ...]) -> bytes:
        return b"(" + " ".join(items).encode("ascii") + b")"

    # --- commands --------------------------------------------------------------------------------

    def body(self, cmd: c.Command) -> bytes:
        match cmd:
            case c.Capability() | c.Noop() | c.Logout() | c.StartTls() | c.Check() | c.Close():
                return _SIMPLE_NAMES[type(cmd)]
            case c.Unselect() | c.Expunge() | c.Idle() | c.Namespace():
                return _SIMPLE_NAMES[type(cmd)]
            case c.Authenticate(mechanism=mech, initial_response=initial):
                return b"AUTHENTICATE " + mech.encode("ascii") + (b" " + initial.encode() if initial else b"")
            case c.Login(username=user, password=password):
                return b"LOGIN " + self.astring(user) + b" " + self.astring(password)
            case c.Select():
                return self.select(cmd)
            case c.Create(mailbox=mailbox, special_use=use):
                return b"CREATE " + self.mailbox(mailbox) + (b" (USE " + self.atoms(use) + b")" if use else b"")
            case c.Delete() | c.Subscribe() | c.Unsubscribe():
                return _SIMPLE_NAMES[type(cmd)] + b" " + self.mailbox(cmd.mailbox)
            case c.Rename(mailbox=old, new_name=new):
                return b"RENAME " + self.mailbox(old) + b" " + self.mailbox(new)
            case c.List():
                return self.list(cmd)
            case c.Lsub(reference=ref, pattern=pattern):
                return b"LSUB " + self.list_mailbox(ref) + b" " + self.list_mailbox(pattern)
            case c.Status(mailbox=mailbox, items=items):
                return b"STATUS " + self.mailbox(mailbox) + b" " + self.atoms(items)
            case c.Append():
                return self.append(cmd)
            case c.UidExpunge(sequence_set=seqs):
                return b"UID EXPUNGE " + str(seqs).encode()
            case c.Search():
                return self.search(cmd)
            case c.Fetch():
                return self.fetch(cmd)
            case c.Store():
                return self.store(cmd)
            case c.Copy() | c.Move():
                name = b"COPY " if isinstance(cmd, c.Copy) else b"MOVE "
                uid = b"UID " if cmd.uid else b""
                return uid + name + str(cmd.sequence_set).encode() + b" " + self.mailbox(cmd.mailbox)
            case c.Id(parameters=None):
                return b"ID NIL"
            case c.Id(parameters=pairs):
                assert pairs is not None
                inner = b" ".join(self.string(k) + b" " + self.nstring(v) for k, v in pairs)
                return b"ID (" + inner + b")"
            case c.Enable(capabilities=caps):
                return b"ENABLE " + " ".join(caps).encode("ascii")
        raise TypeError(f"not an IMAP command: {cmd!r}")

    def select(self, cmd: c.Select) -> bytes:
        out = (b"EXAMINE " if cmd.read_only else b"SELECT ") + self.mailbox(cmd.mailbox)
        params: list[bytes] = []
        if cmd.condstore:
            params.append(b"CONDSTORE")
        if cmd.qresync is not None:
            q = cmd.qresync
            inner = b"%d %d" % (q.uidvalidity, q.modseq)
            if q.known_uids is not None:
                inner += b" " + str(q.known_uids).encode()
            if q.seq_match is not None:
                inner += b" (%s %s)" % (str(q.seq_match[0]).encode(), str(q.seq_match[1]).encode())
            params.append(b"QRESYNC (" + inner + b")")
        return out + (b" (" + b" ".join(params) + b")" if params else b"")

    def list(self, cmd: c.List) -> bytes:
        out = b"LIST "
        if cmd.selection:
            out += self.atoms(cmd.selection) + b" "
        out += self.list_mailbox(cmd.reference) + b" "
        if len(cmd.patterns) == 1:
            out += self.list_mailbox(cmd.patterns[0])
        else:
            out += b"(" + b" ".join(self.list_mailbox(p) for p in cmd.patterns) + b")"
        options = [o.encode("ascii") for o in cmd.returns]
        if cmd.return_status is not None:
            options.append(b"STATUS " + self.atoms(cmd.return_status))
        if options:
            out += b" RETURN (" + b" ".join(options) + b")"
        return out

    def append(self, cmd: c.Append) -> bytes:
        out = b"APPEND " + self.mailbox(cmd.mailbox)
        for message in cmd.messages:
            if message.flags:
                out += b" " + self.atoms(message.flags)
            if message.internal_date is not None:
                out += b' "' + format_date_time(message.internal_date).encode("ascii") + b'"'
            out += b" " + self.literal(message.data)
        return out

    def search(self, cmd: c.Search) -> bytes:
        out = b"UID SEARCH" if cmd.uid else b"SEARCH"
        if cmd.return_options is not None:
            out += b" RETURN " + self.atoms(cmd.return_options)
        if cmd.charset is not None:
            out += b" CHARSET " + self.astring(cmd.charset)
        if isinstance(cmd.key, AndKey):
            return out + b" " + b" ".join(self.search_key(k) for k in cmd.key.keys)
        return out + b" " + self.search_key(cmd.key)

    def search_key(self, key: SearchKey) -> bytes:
        match key:
            case FlagKey(name=name):
                return name.encode("ascii")
            case TextKey(name=name, value=value):
                return name.encode("ascii") + b" " + self.astring(value)
            case HeaderKey(field=field, value=value):
                return b"HEADER " + self.astring(field) + b" " + self.astring(value)
            case KeywordKey(name=name, keyword=keyword):
                return f"{name} {keyword}".encode("ascii")
            case DateKey(name=name, date=date):
                return f"{name} {format_date(date)}".encode("ascii")
            case SizeKey(name=name, size=size):
                return f"{name} {size}".encode("ascii")
            case SequenceKey(sequence_set=seqs):
                return str(seqs).encode("ascii")
            case UidKey(sequence_set=seqs):
                return f"UID {seqs}".encode("ascii")
            case ModSeqKey(modseq=modseq, entry_name=None):
                return b"MODSEQ %d" % modseq
            case ModSeqKey(modseq=modseq, entry_name=entry, entry_type=entry_type):
                assert entry is not None and entry_type is not None
                return b"MODSEQ " + self.string(entry) + b" " + entry_type.encode() + b" %d" % modseq
            case NotKey(key=inner):
                return b"NOT " + self.search_key(inner)
            case OrKey(left=left, right=right):
                return b"OR " + self.search_key(left) + b" " + self.search_key(right)
            case AndKey(keys=keys):
                return b"(" + b" ".join(self.search_key(k) for k in keys) + b")"
        raise TypeError(f"not a search key: {key!r}")

    def fetch(self, cmd: c.Fetch) -> bytes:
        out = b"UID FETCH " if cmd.uid else b"FETCH "
        out += str(cmd.sequence_set).encode() + b" (" + b" ".join(self.fetch_item(i) for i in cmd.items) + b")"
        if cmd.changed_since is not None:
            out += b" (CHANGEDSINCE %d%s)" % (cmd.changed_since, b" VANISHED" if cmd.vanished else b"")
        return out

    def fetch_item(self, item: FetchItem) -> bytes:
        if isinstance(item, FetchAttr):
            return item.name.encode("ascii")
        out = (b"BODY.PEEK[" if item.peek else b"BODY[") + self.section(item.section) + b"]"
        if item.partial is not None:
            out += b"<%d.%d>" % item.partial
        return out

    def section(self, section: Section) -> bytes:
        spec = [str(p).encode() for p in section.parts]
        if section.text is not None:
            spec.append(section.text.encode("ascii"))
        out = b".".join(spec)
        if section.fields:
            out += b" (" + b" ".join(self.astring(f) for f in section.fields) + b")"
        return out

    def store(self, cmd: c.Store) -> bytes:
        out = (b"UID STORE " if cmd.uid else b"STORE ") + str(cmd.sequence_set).encode() + b" "
        if cmd.unchanged_since is not None:
            out += b"(UNCHANGEDSINCE %d) " % cmd.unchanged_since
        out += cmd.mode.encode("ascii") + b"FLAGS" + (b".SILENT" if cmd.silent else b"")
        return out + b" " + self.atoms(cmd.flags)


def format_date_time(value: dt.datetime) -> str:
    """RFC 3501 `date-time` text without the quotes, e.g. `01-Jan-2020 10:00:00 +0100`."""
    offset = value.utcoffset() or dt.timedelta(0)
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return (
        f"{value.day:02d}-{MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def format_date(value: dt.date) -> str:
    """RFC 3501 `date` text, e.g. `1-Feb-2020`."""
    return f"{value.day}-{MONTHS[value.month - 1]}-{value.year:04d}"


_SIMPLE_NAMES: dict[type, bytes] = {
    c.Capability: b"CAPABILITY",
    c.Noop: b"NOOP",
    c.Logout: b"LOGOUT",
    c.StartTls: b"STARTTLS",
    c.Check: b"CHECK",
    c.Close: b"CLOSE",
    c.Unselect: b"UNSELECT",
    c.Expunge: b"EXPUNGE",
    c.Idle: b"IDLE",
    c.Namespace: b"NAMESPACE",
    c.Delete: b"DELETE",
    c.Subscribe: b"SUBSCRIBE",
    c.Unsubscribe: b"UNSUBSCRIBE",
}
