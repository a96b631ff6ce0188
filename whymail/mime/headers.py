"""Header blocks of a raw message located by byte offset, plus MIME parameter parsing (RFC 2045, RFC 2231).

Everything works on the stored bytes and remembers where each field starts and ends, so IMAP can cut
`HEADER.FIELDS` out of a message exactly as it was written.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

_FIELD_NAME = re.compile(rb"[!-9;-~]+")  # RFC 5322 §2.2 ftext
_COMMENT = re.compile(r"\([^()]*\)")
_RFC2231_KEY = re.compile(r"^([^*]+)\*(?:(\d{1,4})(\*)?)?$")


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: its name as written and the byte range of its lines (line breaks included)."""

    name: str
    start: int
    value_start: int
    end: int


def split_header(raw: bytes, start: int, end: int) -> tuple[tuple[HeaderField, ...], int]:
    """The fields of the header block beginning at `start`, and the offset where the body begins.

    The body begins after the first empty line (CRLF or LF), or at the first line that is neither a
    field nor a continuation (a defect `email.parser` treats the same way), or at `end`.
    """
    fields: list[list] = []  # [name, start, value_start, end]
    pos = start
    while pos < end:
        newline = raw.find(b"\n", pos, end)
        line_end = end if newline < 0 else newline + 1
        first = raw[pos : pos + 1]
        if first == b"\n" or raw[pos : pos + 2] == b"\r\n":
            return _freeze(fields), line_end
        if first in (b" ", b"\t") and fields:
            fields[-1][3] = line_end  # folded continuation of the previous field
            pos = line_end
            continue
        colon = raw.find(b":", pos, line_end)
        name = raw[pos:colon].rstrip(b" \t") if colon > pos else b""
        if not name or not _FIELD_NAME.fullmatch(name):
            return _freeze(fields), pos
        fields.append([name.decode("ascii"), pos, colon + 1, line_end])
        pos = line_end
    return _freeze(fields), end


def _freeze(fields: list[list]) -> tuple[HeaderField, ...]:
    return tuple(HeaderField(*field) for field in fields)


def field_value(raw: bytes, field: HeaderField) -> str:
    """The value of a field unfolded (RFC 5322 §2.2.3) and stripped, 8-bit bytes read as UTF-8."""
    value = raw[field.value_start : field.end]
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return value.decode("utf-8", "replace").strip()


def first_value(raw: bytes, fields: tuple[HeaderField, ...], name: str) -> str | None:
    """The unfolded value of the first field called `name` (case-insensitive), or None if there is none."""
    for field in fields:
        if field.name.lower() == name:
            return field_value(raw, field)
    return None


def line_ending(raw: bytes, start: int, end: int) -> bytes:
    """The line ending the block at raw[start:end] uses: LF if its first line ends in a bare LF, else CRLF."""
    newline = raw.find(b"\n", start, end)
    if newline > start and raw[newline - 1] == 0x0D:
        return b"\r\n"
    return b"\n" if newline >= 0 else b"\r\n"


# --- Content-Type and Content-Disposition values ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Params:
    """Parameters of a structured MIME field: `decoded` (RFC 2231 applied) and `wire` for IMAP.

    `wire` joins RFC 2231 continuations but keeps charset-encoded values encoded, under the name with a
    trailing `*` (as Dovecot does), so that BODYSTRUCTURE stays ASCII and clients can decode it.
    Names are lower-case in both.
    """

    decoded: tuple[tuple[str, str], ...] = ()
    wire: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        for key, value in self.decoded:
            if key == name:
                return value
        return None


def parse_structured(value: str) -> tuple[str, Params]:
    """Split a Content-Type/Content-Disposition value into its main token (lower-case) and its parameters."""
    main, _, rest = value.partition(";")
    main = _COMMENT.sub("", main).strip().lower()
    return main, _parse_params(rest)


def _parse_params(text: str) -> Params:
    raw_params = _scan_params(text)
    plain: dict[str, str] = {}
    segments: dict[str, dict[int, tuple[bool, str]]] = {}
    order: list[str] = []
    for key, value in raw_params:
        match = _RFC2231_KEY.match(key)
        base = match.group(1) if match else key
        if base not in order:
            order.append(base)
        if match is None:
            plain.setdefault(key, value)
        else:
            index = int(match.group(2)) if match.group(2) is not None else 0
            extended = match.group(2) is None or match.group(3) is not None
            segments.setdefault(base, {}).setdefault(index, (extended, value))
    decoded: list[tuple[str, str]] = []
    wire: list[tuple[str, str]] = []
    for base in order:
        if base in segments:
            name_wire, value_wire, value_decoded = _join_rfc2231(base, segments[base])
            decoded.append((base, value_decoded))
            wire.append((name_wire, value_wire))
        else:
            decoded.append((base, plain[base]))
            wire.append((base, plain[base]))
    return Params(tuple(decoded), tuple(wire))


def _scan_params(text: str) -> list[tuple[str, str]]:
    """`; name=value; name="quoted \\" value"` -> [(name lower-case, value unquoted)]; junk is skipped."""
    params: list[tuple[str, str]] = []
    pos, size = 0, len(text)
    while pos < size:
        semicolon = text.find(";", pos)
        equals = text.find("=", pos, size if semicolon < 0 else semicolon)
        if equals < 0:  # a parameter without "=": skip it
            if semicolon < 0:
                break
            pos = semicolon + 1
            continue
        name = _COMMENT.sub("", text[pos:equals]).strip(" \t;").lower()
        pos = equals + 1
        while pos < size and text[pos] in " \t":
            pos += 1
        if pos < size and text[pos] == '"':
            chars: list[str] = []
            pos += 1
            while pos < size and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < size:
                    pos += 1
                chars.append(text[pos])
                pos += 1
            value = "".join(chars)
            after = text.find(";", pos)
            pos = size if after < 0 else after + 1
        else:
            after = text.find(";", pos)
            after = size if after < 0 else after
            value = _COMMENT.sub("", text[pos:after]).strip()
            pos = after + 1
        if name and " " not in name:
            params.append((name, value))
    return params


def _join_rfc2231(base: str, parts: dict[int, tuple[bool, str]]) -> tuple[str, str, str]:
    """RFC 2231 §3-§4: join continuations `name*0*`, `name*1`, … ; returns (wire name, wire value, decoded)."""
    ordered: list[tuple[bool, str]] = []
    index = 0
    while index in parts:  # stop at the first gap
        ordered.append(parts[index])
        index += 1
    charset, language = "", ""
    if ordered and ordered[0][0]:
        first = ordered[0][1]
        if first.count("'") >= 2:
            charset, language, text = first.split("'", 2)
            ordered[0] = (True, text)
    any_extended = any(extended for extended, _ in ordered)
    if not any_extended:
        joined = "".join(value for _, value in ordered)
        return base, joined, joined
    data = b"".join(
        unquote_to_bytes(value) if extended else value.encode("utf-8") for extended, value in ordered
    )
    wire_text = "".join(value if extended else quote(value, safe="") for extended, value in ordered)
    return f"{base}*", f"{charset}'{language}'{wire_text}", _decode_charset(data, charset)


def _decode_charset(data: bytes, charset: str) -> str:
    try:
        codec = codecs.lookup(charset.strip() or "utf-8")
        if not getattr(codec, "_is_text_encoding", True):
            raise LookupError(charset)
        return data.decode(codec.name, "replace")
    except (LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")
