"""The MIME tree of a raw message by byte offset, and its IMAP BODY / BODYSTRUCTURE values (RFC 3501 §7.4.2).

`parse_structure` never copies or re-encodes: every part records where its header and body lie in the
stored bytes, so FETCH BODY[section] is a slice. Any bytes give a tree; defects are read the way
Dovecot and `email.parser` read them (a multipart without a usable boundary is text/plain, a part
that does not start with a blank line or fields has an empty header).
"""

from __future__ import annotations

from dataclasses import dataclass

from whymail.mime.envelope import Envelope, envelope_from_fields
from whymail.mime.headers import HeaderField, Params, first_value, parse_structured, split_header

__all__ = ["MimePart", "body_structure", "envelope", "parse_structure"]

MAX_DEPTH = 50
MAX_PARTS = 10_000
_DEFAULT_TEXT_PARAMS = Params((("charset", "us-ascii"),), (("charset", "us-ascii"),))
# RFC 2046 §5.2.1: only these encodings are allowed for message/rfc822, so only these we look inside.
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


@dataclass(frozen=True, slots=True)
class MimePart:
    """One body part (or the message itself) and where it lies in the raw bytes.

    `header_start:body_start` is the header block including its blank line; `body_start:body_end` the
    body as stored (for a multipart child, without the line break that belongs to the next delimiter).
    """

    type: str
    subtype: str
    params: Params
    id: str | None
    description: str | None
    encoding: str  # lower-case, "7bit" when absent
    disposition: str | None
    disposition_params: Params
    language: tuple[str, ...] | None
    location: str | None
    header_start: int
    body_start: int
    body_end: int
    lines: int | None  # text/* and message/rfc822 only
    children: tuple[MimePart, ...] = ()
    message: MimePart | None = None  # message/rfc822: the root of the encapsulated message
    envelope: Envelope | None = None  # message/rfc822: the encapsulated message's envelope
    md5: str | None = None  # Content-MD5 is obsolete; always NIL

    @property
    def size(self) -> int:
        """Body size in octets as stored."""
        return self.body_end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"


def parse_structure(raw: bytes) -> MimePart:
    """The MIME tree of a whole raw message; never raises."""
    return _Parser(raw).part(0, len(raw), ("text", "plain"), 0)


def envelope(raw: bytes) -> Envelope:
    """ENVELOPE (RFC 3501 §7.4.2) of a raw message or a bare header block."""
    fields, _ = split_header(raw, 0, len(raw))
    return envelope_from_fields(raw, fields)


class _Parser:
    __slots__ = ("raw", "parts")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.parts = 0

    def part(self, start: int, end: int, default: tuple[str, str], depth: int) -> MimePart:
        raw = self.raw
        self.parts += 1
        fields, body_start = split_header(raw, start, end)
        content_type = first_value(raw, fields, "content-type")
        type_, subtype, params = _content_type(content_type, default)
        encoding = (first_value(raw, fields, "content-transfer-encoding") or "7bit").lower() or "7bit"
        children: tuple[MimePart, ...] = ()
        message = envelope_value = None
        if type_ == "multipart":
            boundary = params.get("boundary")
            if boundary and depth < MAX_DEPTH:
                child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
                children = self._children(
                    body_start, end, boundary.encode("utf-8", "replace"), child_default, depth
                )
            if not children:  # no usable boundary: read it as text, like email.parser
                type_, subtype = "text", "plain"
        elif (
            (type_, subtype) == ("message", "rfc822")
            and encoding in _IDENTITY_ENCODINGS
            and (depth < MAX_DEPTH and self.parts < MAX_PARTS)
        ):
            message = self.part(body_start, end, ("text", "plain"), depth + 1)
            inner_fields, _ = split_header(raw, body_start, end)
            envelope_value = envelope_from_fields(raw, inner_fields)
        lines = None
        if type_ == "text" or message is not None:
            lines = _count_lines(raw, body_start, end)
        disposition, disposition_params = None, Params()
        disposition_value = first_value(raw, fields, "content-disposition")
        if disposition_value:
            disposition, disposition_params = parse_structured(disposition_value)
            disposition = disposition or None
        return MimePart(
            type=type_,
            subtype=subtype,
            params=params if content_type is not None or type_ != "text" else _DEFAULT_TEXT_PARAMS,
            id=first_value(raw, fields, "content-id"),
            description=first_value(raw, fields, "content-description"),
            encoding=encoding,
            disposition=disposition,
            disposition_params=disposition_params,
            language=_languages(first_value(raw, fields, "content-language")),
            location=first_value(raw, fields, "content-location"),
            header_start=start,
            body_start=body_start,
            body_end=end,
            lines=lines,
            children=children,
            message=message,
            envelope=envelope_value,
        )

    def _children(
        self, start: int, end: int, boundary: bytes, default: tuple[str, str], depth: int
    ) -> tuple[MimePart, ...]:
        """Parts between `--boundary` lines (RFC 2046 §5.1.1); () if there is no delimiter line."""
        ranges: list[tuple[int, int]] = []
        content_start = -1
        for line_start, next_line, closing in _delimiters(self.raw, start, end, boundary):
            if content_start >= 0:
                ranges.append((content_start, max(content_start, _strip_line_break(self.raw, line_start))))
            if closing:
                content_start = -1
                break
            content_start = next_line
            if len(ranges) + self.parts >= MAX_PARTS:
                break
        if content_start >= 0:  # no closing delimiter: the last part runs to the end
            ranges.append((content_start, end))
        children: list[MimePart] = []
        for child_start, child_end in ranges:
            if self.parts >= MAX_PARTS:
                break
            children.append(self.part(child_start, child_end, default, depth + 1))
        return tuple(children)


def _delimiters(raw: bytes, start: int, end: int, boundary: bytes):
    """(line start, next line start, is closing) of each delimiter line in raw[start:end]."""
    delimiter = b"--" + boundary
    pos = start
    while True:
        found = raw.find(delimiter, pos, end)
        if found < 0:
            return
        pos = found + len(delimiter)
        if found > start and raw[found - 1] != 0x0A:  # not at a line start
            continue
        newline = raw.find(b"\n", pos, end)
        next_line = end if newline < 0 else newline + 1
        tail = raw[pos:next_line].rstrip(b" \t\r\n")
        closing = tail.startswith(b"--")
        if tail and not closing:
            continue  # "--boundaryX": a longer boundary, not ours
        yield found, next_line, closing
        if closing:
            return


def _strip_line_break(raw: bytes, delimiter_start: int) -> int:
    """The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1)."""
    if raw[delimiter_start - 2 : delimiter_start] == b"\r\n":
        return delimiter_start - 2
    if raw[delimiter_start - 1 : delimiter_start] == b"\n":
        return delimiter_start - 1
    return delimiter_start


def _content_type(value: str | None, default: tuple[str, str]) -> tuple[str, str, Params]:
    if value is None:
        return default[0], default[1], Params()
    main, params = parse_structured(value)
    type_, slash, subtype = main.partition("/")
    type_, subtype = type_.strip(), subtype.strip()
    if not slash or not type_ or not subtype or " " in type_ or " " in subtype:
        # RFC 2045 §5.2: an unparsable Content-Type means text/plain; charset=us-ascii.
        return "text", "plain", _DEFAULT_TEXT_PARAMS
    return type_, subtype, params


def _languages(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    languages = tuple(tag.strip() for tag in value.split(",") if tag.strip())
    return languages or None


def _count_lines(raw: bytes, start: int, end: int) -> int:
    """Text lines of raw[start:end]; a last line without a line break counts."""
    lines = raw.count(b"\n", start, end)
    if end > start and raw[end - 1] != 0x0A:
        lines += 1
    return lines


# --- BODY / BODYSTRUCTURE --------------------------------------------------------------------------


def body_structure(part: MimePart, extended: bool) -> tuple:
    """BODY (extended=False) or BODYSTRUCTURE (True) as nested Python values in RFC 3501 §7.4.2 order.

    None is NIL, str a string, int a number, tuple a parenthesised list. A multipart is
    `(child, child, …, "SUBTYPE"[, params, disposition, language, location])` where the children are
    themselves tuples; RFC 3501 writes them without a space between (`1*body`). Types, subtypes,
    encodings and parameter/disposition names are upper-case, as in the RFC's examples.
    """
    if part.is_multipart:
        children = tuple(body_structure(child, extended) for child in part.children)
        result: tuple = (*children, part.subtype.upper())
        if extended:
            result += (_param_list(part.params), _disposition(part), _language(part), part.location)
        return result
    result = (
        part.type.upper(),
        part.subtype.upper(),
        _param_list(part.params),
        part.id,
        part.description,
        part.encoding.upper(),
        part.size,
    )
    if part.message is not None:
        result += (part.envelope, body_structure(part.message, extended), part.lines)
    elif part.type == "text":
        result += (part.lines,)
    if extended:
        result += (part.md5, _disposition(part), _language(part), part.location)
    return result


def _param_list(params: Params) -> tuple[str, ...] | None:
    flat = tuple(item for name, value in params.wire for item in (name.upper(), value))
    return flat or None


def _disposition(part: MimePart) -> tuple | None:
    if part.disposition is None:
        return None
    return (part.disposition.upper(), _param_list(part.disposition_params))


def _language(part: MimePart) -> tuple[str, ...] | None:
    return part.language


def header_fields(raw: bytes, part: MimePart) -> tuple[HeaderField, ...]:
    """The header fields of a part (re-located on demand; the tree keeps only offsets)."""
    fields, _ = split_header(raw, part.header_start, part.body_start)
    return fields
