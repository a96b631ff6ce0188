"""Client-side parser for one IMAP server response (the inverse of `encoder.encode_response`).

`parse_response(data)` takes exactly one complete response, CRLF included and literals inline, and
returns the `responses` model. It accepts what our encoder produces plus the common variations other
servers send (quoted vs literal strings, SP between juxtaposed lists). Used by tests and the scenario
runner; it is not meant to be a hardened client.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from whymail.imap.encoder import MONTHS
from whymail.imap.responses import (
    Address,
    AppendUidCode,
    BadCharsetCode,
    Capability,
    CapabilityCode,
    Code,
    Continuation,
    CopyUidCode,
    Enabled,
    Envelope,
    ESearch,
    Exists,
    Expunge,
    Fetch,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchItem,
    FetchModSeq,
    FetchRfc822,
    FetchSize,
    FetchUid,
    Flags,
    Id,
    ListResponse,
    ModifiedCode,
    Namespace,
    NamespaceEntry,
    NumberCode,
    PermanentFlagsCode,
    Recent,
    Response,
    ResponseCode,
    Search,
    StatusResponse,
    Tagged,
    Untagged,
    Value,
    Vanished,
    is_message_rfc822,
    leading_parts,
)


class ResponseParseError(ValueError):
    """The bytes are not one well-formed IMAP response."""


_ATOM_STOP = frozenset(b'(){ %*"\\]') | frozenset(range(0x21)) | {0x7F}
_ATOM_STOP_FLAG = _ATOM_STOP - {ord("\\"), ord("*")}  # flags may start with \ and \* exists
_ASTRING_STOP = _ATOM_STOP - {ord("]")}


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class _Reader:
    """A cursor over the response bytes with the token readers of RFC 3501 §9."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> ResponseParseError:
        return ResponseParseError(f"expected {what} at offset {self.pos}: {self.data[self.pos:self.pos + 20]!r}")

    def peek(self, token: bytes) -> bool:
        return self.data.startswith(token, self.pos)

    def peek_ci(self, token: bytes) -> bool:
        return self.data[self.pos:self.pos + len(token)].upper() == token

    def expect(self, token: bytes) -> None:
        if not self.peek_ci(token):
            raise self.fail(repr(token))
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.peek_ci(token):
            self.pos += len(token)
            return True
        return False

    def sp(self) -> None:
        self.expect(b" ")

    def end(self) -> None:
        if self.data[self.pos:] != b"\r\n":
            raise self.fail("CRLF at end of response")

    def _run(self, stop: frozenset[int]) -> bytes:
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] not in stop:
            self.pos += 1
        return self.data[start:self.pos]

    def atom(self, stop: frozenset[int] = _ATOM_STOP) -> str:
        raw = self._run(stop)
        if not raw:
            raise self.fail("atom")
        return raw.decode("ascii")

    def flag(self) -> str:
        if self.accept(b"\\*"):
            return "\\*"
        return ("\\" if self.accept(b"\\") else "") + self.atom()

    def number(self) -> int:
        raw = self._run(frozenset(range(256)) - frozenset(b"0123456789"))
        if not raw:
            raise self.fail("number")
        return int(raw)

    def text(self) -> str:
        end = self.data.find(b"\r\n", self.pos)
        if end < 0:
            raise self.fail("text")
        raw, self.pos = self.data[self.pos:end], end
        return raw.decode("ascii", "replace")

    def string_bytes(self) -> bytes:
        if self.accept(b'"'):
            out = bytearray()
            while self.pos < len(self.data):
                ch = self.data[self.pos]
                if ch == 0x22:
                    self.pos += 1
                    return bytes(out)
                if ch == 0x5C:
                    self.pos += 1
                out.append(self.data[self.pos])
                self.pos += 1
            raise self.fail("closing quote")
        self.accept(b"~")  # literal8 (RFC 3516) reads the same
        if self.accept(b"{"):
            n = self.number()
            self.accept(b"+")  # non-synchronising literal (RFC 7888)
            self.expect(b"}\r\n")
            if self.pos + n > len(self.data):
                raise self.fail(f"{n} literal octets")
            raw = self.data[self.pos:self.pos + n]
            self.pos += n
            return raw
        raise self.fail("string")

    def string(self) -> str:
        return _decode(self.string_bytes())

    def nil(self) -> bool:
        if self.peek_ci(b"NIL") and (self.pos + 3 == len(self.data) or self.data[self.pos + 3] in _ATOM_STOP):
            self.pos += 3
            return True
        return False

    def nstring_bytes(self) -> bytes | None:
        return None if self.nil() else self.string_bytes()

    def nstring(self) -> str | None:
        return None if self.nil() else self.string()

    def astring(self) -> str:
        if self.peek(b'"') or self.peek(b"{") or self.peek(b"~{"):
            return self.string()
        return self.atom(_ASTRING_STOP)

    def quoted_char(self) -> str | None:
        return None if self.nil() else self.string()

    def list_of(self, read, *, sep_required: bool = True) -> tuple:
        """`(x SP x ...)`; with sep_required=False elements may also be juxtaposed."""
        self.expect(b"(")
        items = []
        while not self.accept(b")"):
            if items:
                if sep_required:
                    self.sp()
                else:
                    self.accept(b" ")
            items.append(read())
        return tuple(items)

    def flag_list(self) -> tuple[str, ...]:
        return self.list_of(self.flag)

    def atoms_to_end(self) -> tuple[str, ...]:
        items = []
        while self.accept(b" "):
            items.append(self.atom())
        return tuple(items)

    def value(self) -> Value:
        if self.peek(b"("):
            return self.list_of(self.value, sep_required=False)
        if self.nil():
            return None
        if self.pos < len(self.data) and self.data[self.pos] in b"0123456789":
            return self.number()
        if self.peek(b'"') or self.peek(b"{") or self.peek(b"~{"):
            return self.string()
        return self.atom()


# --- response codes ----------------------------------------------------------------------------


def _code(r: _Reader) -> ResponseCode:
    name = r.atom().upper()
    if name == "BADCHARSET":
        return BadCharsetCode(r.list_of(r.astring) if r.accept(b" ") else ())
    if name == "CAPABILITY":
        return CapabilityCode(r.atoms_to_end())
    if name == "PERMANENTFLAGS":
        r.sp()
        return PermanentFlagsCode(r.flag_list())
    if name in ("UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"):
        r.sp()
        return NumberCode(name, r.number())  # type: ignore[arg-type]
    if name == "MODIFIED":
        r.sp()
        return ModifiedCode(r.atom())
    if name == "APPENDUID":
        r.sp()
        uidvalidity = r.number()
        r.sp()
        return AppendUidCode(uidvalidity, r.atom())
    if name == "COPYUID":
        r.sp()
        uidvalidity = r.number()
        r.sp()
        source = r.atom()
        r.sp()
        return CopyUidCode(uidvalidity, source, r.atom())
    argument = None
    if r.accept(b" "):
        argument = r._run(frozenset(b"]\r\n")).decode("ascii", "replace")
    return Code(name, argument)


def _resp_text(r: _Reader) -> tuple[ResponseCode | None, str]:
    if not r.accept(b" "):
        return None, ""  # tolerate `A1 OK` with no text (RFC 9051 makes text optional)
    code = None
    if r.accept(b"["):
        code = _code(r)
        r.expect(b"]")
        if not r.accept(b" "):
            return code, ""
    return code, r.text()


# --- FETCH -------------------------------------------------------------------------------------


def _address_list(value: Value) -> tuple[Address, ...] | None:
    if value is None:
        return None
    if not isinstance(value, tuple) or not all(isinstance(a, tuple) and len(a) == 4 for a in value):
        raise ResponseParseError(f"bad address list: {value!r}")
    return tuple(Address(*a) for a in value)  # type: ignore[arg-type]


def _envelope(value: Value) -> Envelope:
    if not isinstance(value, tuple) or len(value) != 10:
        raise ResponseParseError(f"bad envelope: {value!r}")
    date, subject, *addresses, in_reply_to, message_id = value
    return Envelope(date, subject, *(_address_list(a) for a in addresses),  # type: ignore[arg-type]
                    in_reply_to=in_reply_to, message_id=message_id)  # type: ignore[arg-type]


def _body(value: Value) -> Value:
    """Turn the generic envelope inside each message/rfc822 part into an `Envelope`."""
    if not isinstance(value, tuple) or not value:
        return value
    n = leading_parts(value)
    if n:
        return (*(_body(child) for child in value[:n]), *value[n:])
    if is_message_rfc822(value):
        return (*value[:7], _envelope(value[7]), _body(value[8]), *value[9:])
    return value


def _date(r: _Reader) -> datetime:
    text = r.string()
    try:
        day, month, rest = text.strip().split("-", 2)
        year, clock, zone = rest.split(" ")
        hh, mm, ss = (int(x) for x in clock.split(":"))
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
        return datetime(int(year), MONTHS.index(month.capitalize()) + 1, int(day), hh, mm, ss, tzinfo=tz)
    except (ValueError, IndexError) as exc:
        raise ResponseParseError(f"bad date-time: {text!r}") from exc


def _section(r: _Reader) -> tuple[str, tuple[str, ...]]:
    spec = r._run(frozenset(b" ]\r\n")).decode("ascii")
    fields: tuple[str, ...] = ()
    if r.accept(b" "):
        fields = r.list_of(r.astring)
    r.expect(b"]")
    return spec, fields


def _fetch_item(r: _Reader) -> FetchItem:
    name = r.atom(_ATOM_STOP | {ord("[")}).upper()
    if name == "BODY" and r.accept(b"["):
        section, fields = _section(r)
        origin = None
        if r.accept(b"<"):
            origin = r.number()
            r.expect(b">")
        r.sp()
        return FetchBodySection(section, r.nstring_bytes(), origin, fields)
    r.sp()
    if name == "FLAGS":
        return FetchFlags(r.flag_list())
    if name == "UID":
        return FetchUid(r.number())
    if name == "MODSEQ":
        r.expect(b"(")
        modseq = r.number()
        r.expect(b")")
        return FetchModSeq(modseq)
    if name == "INTERNALDATE":
        return FetchInternalDate(_date(r))
    if name == "RFC822.SIZE":
        return FetchSize(r.number())
    if name == "ENVELOPE":
        return FetchEnvelope(_envelope(r.value()))
    if name in ("BODY", "BODYSTRUCTURE"):
        return FetchBodyStructure(_body(r.value()), name == "BODYSTRUCTURE")
    if name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        return FetchRfc822(name, r.nstring_bytes())  # type: ignore[arg-type]
    raise r.fail(f"known FETCH item, not {name}")


# --- responses ---------------------------------------------------------------------------------


def _namespace(r: _Reader) -> tuple[NamespaceEntry, ...] | None:
    if r.nil():
        return None

    def entry() -> NamespaceEntry:
        r.expect(b"(")
        prefix = r.string()
        r.sp()
        delimiter = r.quoted_char()
        r.expect(b")")
        return NamespaceEntry(prefix, delimiter)

    return r.list_of(entry, sep_required=False)


def _esearch(r: _Reader) -> ESearch:
    tag, uid, fields = None, False, {}
    if r.accept(b" (TAG "):
        tag = r.string()
        r.expect(b")")
    if r.accept(b" UID"):
        uid = True
    while r.accept(b" "):
        name = r.atom().upper()
        r.sp()
        key = name.lower()
        if key not in ("min", "max", "all", "count", "modseq"):
            raise r.fail(f"known ESEARCH result, not {name}")
        fields[key] = r.atom() if key == "all" else r.number()
    return ESearch(tag, uid, **fields)


def _search(r: _Reader) -> Search:
    numbers, modseq = [], None
    while r.accept(b" "):
        if r.accept(b"(MODSEQ "):
            modseq = r.number()
            r.expect(b")")
            break
        numbers.append(r.number())
    return Search(tuple(numbers), modseq)


def _id(r: _Reader) -> Id:
    if r.nil():
        return Id(None)
    flat = r.list_of(r.nstring)
    if len(flat) % 2:
        raise ResponseParseError("odd number of ID parameters")
    return Id(tuple(zip(flat[::2], flat[1::2], strict=True)))


def _list(r: _Reader, command: str) -> ListResponse:
    attributes = r.flag_list()
    r.sp()
    delimiter = r.quoted_char()
    r.sp()
    return ListResponse(attributes, delimiter, r.astring(), command)  # type: ignore[arg-type]


def _status(r: _Reader) -> StatusResponse:
    mailbox = r.astring()
    r.sp()

    def item() -> tuple[str, int]:
        name = r.atom().upper()
        r.sp()
        return name, r.number()

    return StatusResponse(mailbox, r.list_of(item))


def _untagged(r: _Reader) -> Response:
    if r.pos < len(r.data) and r.data[r.pos] in b"0123456789":
        number = r.number()
        r.sp()
        kind = r.atom().upper()
        if kind == "EXISTS":
            return Exists(number)
        if kind == "RECENT":
            return Recent(number)
        if kind == "EXPUNGE":
            return Expunge(number)
        if kind == "FETCH":
            r.sp()
            return Fetch(number, r.list_of(lambda: _fetch_item(r)))
        raise r.fail(f"message data, not {kind}")
    kind = r.atom().upper()
    if kind in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        code, text = _resp_text(r)
        return Untagged(kind, text, code)  # type: ignore[arg-type]
    if kind in ("CAPABILITY", "ENABLED"):
        return (Capability if kind == "CAPABILITY" else Enabled)(r.atoms_to_end())
    if kind == "SEARCH":
        return _search(r)
    if kind == "ESEARCH":
        return _esearch(r)
    r.sp()
    if kind in ("LIST", "LSUB"):
        return _list(r, kind)
    if kind == "STATUS":
        return _status(r)
    if kind == "FLAGS":
        return Flags(r.flag_list())
    if kind == "VANISHED":
        earlier = r.accept(b"(EARLIER) ")
        return Vanished(r.atom(), earlier)
    if kind == "NAMESPACE":
        personal = _namespace(r)
        r.sp()
        other = _namespace(r)
        r.sp()
        return Namespace(personal, other, _namespace(r))
    if kind == "ID":
        return _id(r)
    raise r.fail(f"known untagged response, not {kind}")


def parse_response(data: bytes) -> Response:
    """Parse exactly one complete response (CRLF-terminated, literals inline)."""
    r = _Reader(data)
    try:
        if r.accept(b"+"):
            text = r.text()[1:] if r.peek(b" ") else r.text()
            resp: Response = Continuation(text)
        elif r.accept(b"* "):
            resp = _untagged(r)
        else:
            tag = r.atom(_ASTRING_STOP | {ord("+")})
            r.sp()
            status = r.atom().upper()
            code, text = _resp_text(r)
            resp = Tagged(tag, status, text, code)  # type: ignore[arg-type]
    except ResponseParseError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ResponseParseError(str(exc)) from exc
    r.end()
    return resp
