"""Encode `responses` models as IMAP wire bytes (RFC 3501 §7, §9 ABNF), one CRLF-terminated response.

Strings go out as the simplest legal form: an atom where the grammar takes an astring, a quoted
string when every character is a 7-bit TEXT-CHAR, otherwise a synchronising literal `{n}\\r\\n...`.
The models have already validated or sanitised everything else, so the output is always legal.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from whymail.imap.responses import (
    ADDRESS_FIELDS,
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
    is_atom,
    is_message_rfc822,
    leading_parts,
)

CRLF = b"\r\n"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_QUOTED_MAX = 1024  # longer strings go as literals, which clients read without scanning


def _to_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _quotable(raw: bytes) -> bool:
    """True if every octet is a TEXT-CHAR (RFC 3501 §9: %x01-7F except CR and LF)."""
    return len(raw) <= _QUOTED_MAX and raw.isascii() and not any(c in raw for c in b"\r\n\x00")


def encode_literal(raw: bytes) -> bytes:
    """`{n}CRLF` followed by the octets (RFC 3501 §4.3)."""
    return b"{%d}\r\n" % len(raw) + raw


def encode_string(value: str | bytes) -> bytes:
    """An IMAP `string`: quoted when every octet allows it, else a literal."""
    raw = _to_bytes(value)
    if _quotable(raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return encode_literal(raw)


def encode_nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else encode_string(value)


def encode_astring(value: str) -> bytes:
    """An `astring`: atom when possible (but never the ambiguous NIL), else a string."""
    if is_atom(value, allow_bracket=True) and value.upper() != "NIL":
        return value.encode("ascii")
    return encode_string(value)


def encode_mailbox(name: str) -> bytes:
    """A mailbox name (already modified UTF-7) as an astring (RFC 3501 §9 mailbox)."""
    return encode_astring(name)


def _quoted_char(delimiter: str | None) -> bytes:
    if delimiter is None:
        return b"NIL"
    return encode_string(delimiter)  # one 7-bit char: always quoted, with \ and " escaped


def format_date(value: datetime) -> str:
    """date-time without quotes: `dd-Mon-yyyy hh:mm:ss +zzzz`, day space-padded (RFC 3501 §9)."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("INTERNALDATE needs an aware datetime")
    minutes = int(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (f"{value.day:2d}-{MONTHS[value.month - 1]}-{value.year:04d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{hours:02d}{mins:02d}")


def _paren(parts: list[bytes] | tuple[bytes, ...], sep: bytes = b" ") -> bytes:
    return b"(" + sep.join(parts) + b")"


def _atoms(values: tuple[str, ...]) -> list[bytes]:
    return [v.encode("ascii") for v in values]


def encode_flag_list(flags: tuple[str, ...]) -> bytes:
    return _paren(_atoms(flags))


# --- response codes and resp-text --------------------------------------------------------------


def encode_code(code: ResponseCode) -> bytes:
    """The inside of `[...]` (RFC 3501 §9 resp-text-code)."""
    if isinstance(code, Code):
        name = code.name.encode("ascii")
        return name if code.argument is None else name + b" " + code.argument.encode("ascii")
    if isinstance(code, BadCharsetCode):
        if not code.charsets:
            return b"BADCHARSET"
        return b"BADCHARSET " + _paren([encode_astring(c) for c in code.charsets])
    if isinstance(code, CapabilityCode):
        return b" ".join([b"CAPABILITY", *_atoms(code.capabilities)])
    if isinstance(code, PermanentFlagsCode):
        return b"PERMANENTFLAGS " + encode_flag_list(code.flags)
    if isinstance(code, NumberCode):
        return b"%s %d" % (code.name.encode("ascii"), code.value)
    if isinstance(code, ModifiedCode):
        return b"MODIFIED " + code.uids.encode("ascii")
    if isinstance(code, AppendUidCode):
        return b"APPENDUID %d %s" % (code.uidvalidity, code.uids.encode("ascii"))
    if isinstance(code, CopyUidCode):
        return b"COPYUID %d %s %s" % (code.uidvalidity, code.source.encode("ascii"),
                                      code.destination.encode("ascii"))
    raise TypeError(f"not a response code: {code!r}")


def encode_resp_text(code: ResponseCode | None, text: str) -> bytes:
    prefix = b"" if code is None else b"[" + encode_code(code) + b"] "
    return prefix + text.encode("ascii")


# --- FETCH -------------------------------------------------------------------------------------


def _encode_address_list(addresses: tuple[Address, ...] | None) -> bytes:
    if addresses is None:
        return b"NIL"
    # env-from = "(" 1*address ")": addresses are juxtaposed, no SP between them
    return _paren([_paren([encode_nstring(a.name), encode_nstring(a.adl), encode_nstring(a.mailbox),
                           encode_nstring(a.host)]) for a in addresses], b"")


def encode_envelope(env: Envelope) -> bytes:
    parts = [encode_nstring(env.date), encode_nstring(env.subject)]
    parts += [_encode_address_list(getattr(env, f)) for f in ADDRESS_FIELDS]
    parts += [encode_nstring(env.in_reply_to), encode_nstring(env.message_id)]
    return _paren(parts)


def _encode_value(value: Value) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, str):
        return encode_string(value)
    if isinstance(value, Envelope):
        return encode_envelope(value)
    return _paren([_encode_value(v) for v in value])


def encode_body(body: Value) -> bytes:
    """A body structure: multipart children are juxtaposed (RFC 3501 §9 body-type-mpart = 1*body)."""
    if not isinstance(body, tuple) or not body:
        return _encode_value(body)
    n = leading_parts(body)
    if n:
        children = b"".join(encode_body(child) for child in body[:n])
        return _paren([children, *(_encode_value(v) for v in body[n:])])
    if is_message_rfc822(body):
        return _paren([*(_encode_value(v) for v in body[:8]), encode_body(body[8]),
                       *(_encode_value(v) for v in body[9:])])
    return _encode_value(body)


def section_spec(item: FetchBodySection) -> bytes:
    spec = item.section.encode("ascii")
    if item.fields:
        spec += b" " + _paren([encode_astring(f) for f in item.fields])
    return spec


def encode_fetch_item(item: FetchItem) -> bytes:
    if isinstance(item, FetchFlags):
        return b"FLAGS " + encode_flag_list(item.flags)
    if isinstance(item, FetchUid):
        return b"UID %d" % item.uid
    if isinstance(item, FetchModSeq):
        return b"MODSEQ (%d)" % item.modseq
    if isinstance(item, FetchInternalDate):
        return b'INTERNALDATE "' + format_date(item.date).encode("ascii") + b'"'
    if isinstance(item, FetchSize):
        return b"RFC822.SIZE %d" % item.size
    if isinstance(item, FetchEnvelope):
        return b"ENVELOPE " + encode_envelope(item.envelope)
    if isinstance(item, FetchBodyStructure):
        return (b"BODYSTRUCTURE " if item.extensible else b"BODY ") + encode_body(item.structure)
    if isinstance(item, FetchBodySection):
        origin = b"" if item.origin is None else b"<%d>" % item.origin
        data = b"NIL" if item.data is None else encode_literal(item.data)
        return b"BODY[" + section_spec(item) + b"]" + origin + b" " + data
    if isinstance(item, FetchRfc822):
        return item.kind.encode("ascii") + b" " + (b"NIL" if item.data is None else encode_literal(item.data))
    raise TypeError(f"not a FETCH item: {item!r}")


# --- responses ---------------------------------------------------------------------------------


def _namespace(entries: tuple[NamespaceEntry, ...] | None) -> bytes:
    if entries is None:
        return b"NIL"
    return _paren([_paren([encode_string(e.prefix), _quoted_char(e.delimiter)]) for e in entries], b"")


def _esearch(r: ESearch) -> bytes:
    parts = [b"ESEARCH"]
    if r.tag is not None:
        parts.append(b"(TAG " + encode_string(r.tag) + b")")
    if r.uid:
        parts.append(b"UID")
    for name, value in (("MIN", r.min), ("MAX", r.max), ("ALL", r.all), ("COUNT", r.count),
                        ("MODSEQ", r.modseq)):
        if value is not None:
            parts.append(name.encode("ascii") + b" " + str(value).encode("ascii"))
    return b" ".join(parts)


def _id(r: Id) -> bytes:
    if r.params is None:
        return b"ID NIL"
    return b"ID " + _paren([encode_string(k) + b" " + encode_nstring(v) for k, v in r.params])


def _search(r: Search) -> bytes:
    out = b" ".join([b"SEARCH", *(b"%d" % n for n in r.numbers)])
    return out if r.modseq is None else out + b" (MODSEQ %d)" % r.modseq


_UNTAGGED: dict[type, Callable[[object], bytes]] = {
    Untagged: lambda r: r.status.encode("ascii") + b" " + encode_resp_text(r.code, r.text),
    Capability: lambda r: b" ".join([b"CAPABILITY", *_atoms(r.capabilities)]),
    Enabled: lambda r: b" ".join([b"ENABLED", *_atoms(r.capabilities)]),
    ListResponse: lambda r: b"%s %s %s %s" % (r.command.encode("ascii"), encode_flag_list(r.attributes),
                                              _quoted_char(r.delimiter), encode_mailbox(r.mailbox)),
    StatusResponse: lambda r: b"STATUS " + encode_mailbox(r.mailbox) + b" " + _paren(
        [b"%s %d" % (name.encode("ascii"), value) for name, value in r.items]),
    Search: _search,
    ESearch: _esearch,
    Flags: lambda r: b"FLAGS " + encode_flag_list(r.flags),
    Exists: lambda r: b"%d EXISTS" % r.count,
    Recent: lambda r: b"%d RECENT" % r.count,
    Expunge: lambda r: b"%d EXPUNGE" % r.number,
    Vanished: lambda r: b"VANISHED " + (b"(EARLIER) " if r.earlier else b"") + r.uids.encode("ascii"),
    Namespace: lambda r: b"NAMESPACE " + b" ".join(_namespace(x) for x in (r.personal, r.other, r.shared)),
    Id: _id,
    Fetch: lambda r: b"%d FETCH " % r.number + _paren([encode_fetch_item(i) for i in r.items]),
}


def encode_response(resp: Response) -> bytes:
    """One response as wire bytes, CRLF-terminated (literals included inline)."""
    if isinstance(resp, Tagged):
        return resp.tag.encode("ascii") + b" " + resp.status.encode("ascii") + b" " + \
            encode_resp_text(resp.code, resp.text) + CRLF
    if isinstance(resp, Continuation):
        return b"+ " + resp.text.encode("ascii") + CRLF
    encode = _UNTAGGED.get(type(resp))
    if encode is None:
        raise TypeError(f"not an IMAP response: {resp!r}")
    return b"* " + encode(resp) + CRLF


def encode_responses(responses: list[Response]) -> bytes:
    """Several responses concatenated, in order."""
    return b"".join(encode_response(r) for r in responses)
