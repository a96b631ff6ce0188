"""FETCH BODY[section]<partial> (RFC 3501 §6.4.5): cut a section out of the stored bytes, never re-encoded.

A section that does not exist (part 7 of a three-part message, HEADER of a part that is not a
message/rfc822) gives empty bytes, which the encoder sends as `""`; RFC 3501 leaves this open and
clients treat it like Dovecot's NIL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from whymail.mime.headers import line_ending, split_header
from whymail.mime.structure import MimePart, parse_structure

__all__ = ["SectionSpec", "fetch_section", "parse_section_spec", "rfc822_size"]

_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_FIELD_LIST = re.compile(
    r'\s*\(\s*((?:[^()"\s]+|"(?:[^"\\]|\\.)*")(?:\s+(?:[^()"\s]+|"(?:[^"\\]|\\.)*"))*)\s*\)\s*'
)
_FIELD_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"|([^"\s]+)')


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """A parsed section-spec: part numbers, then HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME or None.

    `fields` holds the header-list of HEADER.FIELDS[.NOT], upper-cased.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


def parse_section_spec(spec: str) -> SectionSpec:
    """`"1.2.HEADER.FIELDS (From To)"` -> SectionSpec((1, 2), "HEADER.FIELDS", ("FROM", "TO")).

    Raises ValueError on anything RFC 3501 §9 `section-spec` does not allow.
    """
    head, space, rest = spec.strip().partition(" ")
    if not head and not space:
        return SectionSpec()
    numbers: list[int] = []
    pieces = head.split(".")
    while pieces and pieces[0].isdigit():
        number = int(pieces.pop(0))
        if number == 0 or len(numbers) >= 100:
            raise ValueError(f"bad part number in section {spec!r}")
        numbers.append(number)
    text = ".".join(pieces).upper() or None
    if text is not None and text not in _TEXTS:
        raise ValueError(f"unknown section text in {spec!r}")
    if text == "MIME" and not numbers:
        raise ValueError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        match = _FIELD_LIST.fullmatch(rest) if space else None
        if match is None:
            raise ValueError(f"{text} needs a list of field names")
        fields = tuple(_field_name(item).upper() for item in _FIELD_ITEM.finditer(match.group(1)))
    elif space and rest.strip():
        raise ValueError(f"unexpected text after section in {spec!r}")
    return SectionSpec(tuple(numbers), text, fields)


def _field_name(item: re.Match[str]) -> str:
    if item.group(1) is None:
        return item.group(2)
    return re.sub(r"\\(.)", r"\1", item.group(1))


def rfc822_size(raw: bytes) -> int:
    """RFC822.SIZE: the message size in octets as stored (CRLF line endings expected in the store)."""
    return len(raw)


def fetch_section(
    raw: bytes,
    section: SectionSpec | str,
    partial: tuple[int, int] | None = None,
    *,
    structure: MimePart | None = None,
) -> bytes:
    """The bytes of BODY[section]<origin.count>; empty bytes for a section that does not exist.

    Pass `structure` (from `parse_structure(raw)`) when fetching several sections of one message.
    """
    spec = parse_section_spec(section) if isinstance(section, str) else section
    data = _section_bytes(raw, spec, structure)
    if partial is None:
        return data
    origin, count = partial
    if origin < 0 or count < 0:
        raise ValueError("partial origin and count must not be negative")
    return data[origin : origin + count]  # origin beyond the end -> b"" (RFC 3501 §6.4.5)


def _section_bytes(raw: bytes, spec: SectionSpec, structure: MimePart | None) -> bytes:
    if not spec.part and spec.text is None:
        return raw
    if not spec.part and structure is None:  # top-level HEADER/TEXT: no need to walk the MIME tree
        _, body_start = split_header(raw, 0, len(raw))
        return _message_text(raw, _Span(0, body_start, len(raw)), spec)
    root = structure if structure is not None else parse_structure(raw)
    if not spec.part:
        return _message_text(raw, root, spec)
    part = find_part(root, spec.part)
    if part is None:
        return b""
    if spec.text is None:
        return raw[part.body_start : part.body_end]
    if spec.text == "MIME":
        return raw[part.header_start : part.body_start]
    if part.message is None:
        return b""  # HEADER/TEXT of a part exist only for message/rfc822 parts
    return _message_text(raw, part.message, spec)


def find_part(root: MimePart, numbers: tuple[int, ...]) -> MimePart | None:
    """The part a section number names (RFC 3501 §6.4.5), or None if there is no such part.

    Inside a message (the top level or an encapsulated message/rfc822), the numbers count the
    children of a multipart body; a non-multipart body is part 1 by itself.
    """
    part: MimePart | None = None
    message: MimePart | None = root
    for number in numbers:
        if message is None:  # the previous number selected a part that is not a message
            if part is None or not part.is_multipart:
                return None
            container = part
        else:
            container = message
        if container.is_multipart:
            if number > len(container.children):
                return None
            part = container.children[number - 1]
        elif number == 1:
            part = container
        else:
            return None
        message = part.message
    return part


@dataclass(frozen=True, slots=True)
class _Span:
    """Where a message's header and body lie, when the rest of its MimePart is not needed."""

    header_start: int
    body_start: int
    body_end: int


def _message_text(raw: bytes, message: MimePart | _Span, spec: SectionSpec) -> bytes:
    """HEADER, HEADER.FIELDS[.NOT] or TEXT of a message (top-level or encapsulated)."""
    if spec.text == "TEXT":
        return raw[message.body_start : message.body_end]
    if spec.text == "HEADER":
        return raw[message.header_start : message.body_start]
    if spec.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return _header_fields(raw, message, frozenset(spec.fields), spec.text == "HEADER.FIELDS")
    return b""  # MIME without a part number cannot be parsed, so nothing else reaches here


def _header_fields(raw: bytes, message: MimePart | _Span, names: frozenset[str], wanted: bool) -> bytes:
    """The matching field lines as stored (folding kept), then the blank line that ends a header."""
    fields, _ = split_header(raw, message.header_start, message.body_start)
    eol = line_ending(raw, message.header_start, message.body_start)
    out: list[bytes] = []
    for field in fields:
        if (field.name.upper() in names) == wanted:
            lines = raw[field.start : field.end]
            out.append(lines if lines.endswith(b"\n") else lines + eol)
    out.append(eol)
    return b"".join(out)
