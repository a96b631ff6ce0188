"""FETCH response data items (RFC 3501 §7.4.2, RFC 7162 MODSEQ) and the nested values of BODYSTRUCTURE.

The MIME layer hands a body structure over as a neutral `Value` tree; `Envelope` and `Address` are
typed because their address lists are juxtaposed on the wire and need no guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal, Union

from whymail.imap.wire_checks import (
    MAX_MODSEQ,
    check_flag,
    check_number,
    check_string,
    set_field,
    wire_str,
)

Value = Union[None, int, str, "Envelope", tuple["Value", ...]]  # noqa: UP007 (forward references)
"""Neutral nested value for BODY/BODYSTRUCTURE: None is NIL, str an IMAP string, tuple a list.

`bytes` is accepted on construction and normalised to `str` (UTF-8 with surrogateescape), so raw
8-bit header bytes survive the round trip. A message/rfc822 part carries an `Envelope` at index 7.
"""


def _clean_value(value: object) -> Value:
    if value is None or isinstance(value, Envelope):
        return value
    if isinstance(value, bool):
        raise ValueError("bool is not an IMAP value")
    if isinstance(value, int):
        return check_number(value, "number", maximum=MAX_MODSEQ)
    if isinstance(value, str | bytes):
        value = wire_str(value, "string")
        return value.replace("\x00", "\ufffd")  # a literal may not carry NUL
    if isinstance(value, tuple | list):
        return tuple(_clean_value(v) for v in value)
    raise ValueError(f"not an IMAP value: {value!r}")


def _nstring(value: str | bytes | None) -> str | None:
    return None if value is None else _clean_value(value)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Address:
    """One ENVELOPE address: (name adl mailbox host); group markers use mailbox/host None."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    def __post_init__(self) -> None:
        for f in ("name", "adl", "mailbox", "host"):
            set_field(self, f, _nstring(getattr(self, f)))


@dataclass(frozen=True, slots=True)
class Envelope:
    """ENVELOPE fields (RFC 3501 §7.4.2); empty address lists are normalised to None (NIL)."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] | None = None
    sender: tuple[Address, ...] | None = None
    reply_to: tuple[Address, ...] | None = None
    to: tuple[Address, ...] | None = None
    cc: tuple[Address, ...] | None = None
    bcc: tuple[Address, ...] | None = None
    in_reply_to: str | None = None
    message_id: str | None = None

    def __post_init__(self) -> None:
        for f in ("date", "subject", "in_reply_to", "message_id"):
            set_field(self, f, _nstring(getattr(self, f)))
        for f in ADDRESS_FIELDS:
            addresses = tuple(getattr(self, f) or ()) or None
            if addresses is not None and not all(isinstance(a, Address) for a in addresses):
                raise ValueError(f"{f} must hold Address values")
            set_field(self, f, addresses)


ADDRESS_FIELDS = ("from_", "sender", "reply_to", "to", "cc", "bcc")


def normalise_date(value: datetime) -> datetime:
    """Drop what date-time cannot carry: microseconds and sub-minute UTC offsets (RFC 3501 §9)."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("INTERNALDATE needs an aware datetime")
    tz = timezone(timedelta(minutes=int(offset.total_seconds() / 60)))
    return value.replace(microsecond=0, tzinfo=tz)


@dataclass(frozen=True, slots=True)
class FetchFlags:
    flags: tuple[str, ...]

    def __post_init__(self) -> None:
        set_field(self, "flags", tuple(check_flag(f) for f in self.flags))


@dataclass(frozen=True, slots=True)
class FetchUid:
    uid: int

    def __post_init__(self) -> None:
        check_number(self.uid, "UID", minimum=1)


@dataclass(frozen=True, slots=True)
class FetchModSeq:
    modseq: int

    def __post_init__(self) -> None:
        check_number(self.modseq, "modseq", minimum=1, maximum=MAX_MODSEQ)


@dataclass(frozen=True, slots=True)
class FetchInternalDate:
    date: datetime

    def __post_init__(self) -> None:
        set_field(self, "date", normalise_date(self.date))


@dataclass(frozen=True, slots=True)
class FetchSize:
    """RFC822.SIZE."""

    size: int

    def __post_init__(self) -> None:
        check_number(self.size, "RFC822.SIZE")


@dataclass(frozen=True, slots=True)
class FetchEnvelope:
    envelope: Envelope

    def __post_init__(self) -> None:
        if not isinstance(self.envelope, Envelope):
            raise ValueError(f"not an Envelope: {self.envelope!r}")


@dataclass(frozen=True, slots=True)
class FetchBodyStructure:
    """BODYSTRUCTURE, or BODY (no extension data) when `extensible` is False."""

    structure: Value
    extensible: bool = True

    def __post_init__(self) -> None:
        structure = _clean_value(self.structure)
        if not isinstance(structure, tuple) or not structure:
            raise ValueError("a body structure is a non-empty list")
        _check_body(structure)
        set_field(self, "structure", structure)


def is_message_rfc822(body: tuple[Value, ...]) -> bool:
    """True for a message/rfc822 body-type-msg, whose index 7 is an envelope and 8 a body."""
    return (len(body) > 8 and isinstance(body[0], str) and isinstance(body[1], str)
            and body[0].upper() == "MESSAGE" and body[1].upper() == "RFC822")


def leading_parts(body: tuple[Value, ...]) -> int:
    """How many child bodies open a multipart body (RFC 3501 §9 body-type-mpart = 1*body SP subtype)."""
    n = 0
    while n < len(body) and isinstance(body[n], tuple):
        n += 1
    return n


def _has_envelope(value: Value) -> bool:
    return isinstance(value, Envelope) or (isinstance(value, tuple) and any(_has_envelope(v) for v in value))


def _check_body(body: Value) -> None:
    """An `Envelope` may appear only at index 7 of a message/rfc822 part, where clients expect one."""
    if not isinstance(body, tuple):
        if _has_envelope(body):
            raise ValueError("an Envelope belongs at index 7 of a message/rfc822 part")
        return
    n = leading_parts(body)
    if n:
        for child in body[:n]:
            _check_body(child)
        rest = body[n:]
    elif is_message_rfc822(body):
        if not isinstance(body[7], Envelope):
            raise ValueError("a message/rfc822 part needs an Envelope at index 7")
        _check_body(body[8])
        rest = body[:7] + body[9:]
    else:
        rest = body
    if any(_has_envelope(v) for v in rest):
        raise ValueError("an Envelope belongs at index 7 of a message/rfc822 part")


_SECTION_RE = re.compile(
    r"(?:[1-9]\d*(?:\.[1-9]\d*)*(?:\.(?:HEADER|HEADER\.FIELDS|HEADER\.FIELDS\.NOT|TEXT|MIME))?"
    r"|HEADER|HEADER\.FIELDS|HEADER\.FIELDS\.NOT|TEXT)?",
    re.ASCII,
)


def _clean_body(data: bytes | None) -> bytes | None:
    if data is None or b"\x00" not in data:
        return data
    return data.replace(b"\x00", b"\x80")


@dataclass(frozen=True, slots=True)
class FetchBodySection:
    """`BODY[section (fields)]<origin> data`; `fields` only for HEADER.FIELDS[.NOT]; None data is NIL."""

    section: str = ""
    data: bytes | None = b""
    origin: int | None = None
    fields: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        section = self.section.upper()
        if not _SECTION_RE.fullmatch(section):
            raise ValueError(f"invalid section: {self.section!r}")
        set_field(self, "section", section)
        wants_fields = section.endswith("FIELDS") or section.endswith("FIELDS.NOT")
        if wants_fields != bool(self.fields):
            raise ValueError("header fields go with HEADER.FIELDS[.NOT] and nothing else")
        set_field(self, "fields", tuple(check_string(f, "header field name") for f in self.fields))
        if self.origin is not None:
            check_number(self.origin, "origin")
        set_field(self, "data", _clean_body(self.data))


@dataclass(frozen=True, slots=True)
class FetchRfc822:
    """RFC822, RFC822.HEADER or RFC822.TEXT data; None data is NIL."""

    kind: Literal["RFC822", "RFC822.HEADER", "RFC822.TEXT"]
    data: bytes | None

    def __post_init__(self) -> None:
        if self.kind not in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            raise ValueError(f"invalid RFC822 item: {self.kind!r}")
        set_field(self, "data", _clean_body(self.data))


FetchItem = (FetchFlags | FetchUid | FetchModSeq | FetchInternalDate | FetchSize | FetchEnvelope |
    FetchBodyStructure | FetchBodySection | FetchRfc822)
