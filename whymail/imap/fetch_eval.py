"""FETCH data items for one message (RFC 3501 §6.4.5, §7.4.2; RFC 7162 MODSEQ).

`needs_message` tells the session whether the raw bytes must be read; `fetch_items` turns the
requested items into typed response items. Whether \\Seen is set is decided by the session
(`sets_seen`), because it needs the storage.
"""

from __future__ import annotations

from whymail.imap.fetch_data import (
    Address,
    Envelope,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchModSeq,
    FetchRfc822,
    FetchSize,
    FetchUid,
)
from whymail.imap.fetch_data import FetchItem as FetchResult
from whymail.imap.fetchitems import BodySection, FetchAttr, FetchItem
from whymail.imap.storage import MessageMeta
from whymail.mime.sections import SectionSpec, fetch_section
from whymail.mime.structure import MimePart, body_structure, envelope, parse_structure

_META_ATTRS = frozenset({"FLAGS", "UID", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})


def needs_message(items: tuple[FetchItem, ...]) -> bool:
    """Whether any item reads the message bytes."""
    return any(isinstance(item, BodySection) or item.name not in _META_ATTRS for item in items)


def sets_seen(items: tuple[FetchItem, ...]) -> bool:
    """BODY[...] without PEEK, RFC822 and RFC822.TEXT set \\Seen (RFC 3501 §6.4.5)."""
    return any(
        (isinstance(item, BodySection) and not item.peek)
        or (isinstance(item, FetchAttr) and item.name in ("RFC822", "RFC822.TEXT"))
        for item in items
    )


def sorted_flags(flags: frozenset[str]) -> tuple[str, ...]:
    """System flags first in a fixed order, then keywords alphabetically (stable output for clients)."""
    system = [f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft") if f in flags]
    return (*system, *sorted(f for f in flags if f not in system))


def to_envelope(value: tuple) -> Envelope:
    """Convert the MIME layer's ENVELOPE tuple into the typed response value."""

    def addresses(items: tuple | None) -> tuple[Address, ...] | None:
        return tuple(Address(*a) for a in items) if items else None

    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = value
    return Envelope(
        date, subject, addresses(from_), addresses(sender), addresses(reply_to), addresses(to),
        addresses(cc), addresses(bcc), in_reply_to, message_id,
    )


def _typed_structure(body: tuple) -> tuple:
    """Replace the MIME layer's envelope tuples (index 7 of message/rfc822 parts) with `Envelope`."""
    children = 0
    while children < len(body) and isinstance(body[children], tuple):
        children += 1
    if children:
        return (*(_typed_structure(child) for child in body[:children]), *body[children:])
    if (
        len(body) > 8 and isinstance(body[0], str) and body[0].upper() == "MESSAGE"
        and isinstance(body[1], str) and body[1].upper() == "RFC822" and isinstance(body[7], tuple)
    ):
        return (*body[:7], to_envelope(body[7]), _typed_structure(body[8]), *body[9:])
    return body


def section_name(item: BodySection) -> str:
    """The section text as echoed in the response, e.g. `1.2.HEADER.FIELDS` or ``."""
    parts = ".".join(str(p) for p in item.section.parts)
    text = item.section.text or ""
    return f"{parts}.{text}" if parts and text else parts or text


class MessageData:
    """A message's raw bytes with its MIME tree parsed once."""

    __slots__ = ("raw", "_structure")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._structure: MimePart | None = None

    @property
    def structure(self) -> MimePart:
        if self._structure is None:
            self._structure = parse_structure(self.raw)
        return self._structure


def fetch_items(
    items: tuple[FetchItem, ...], meta: MessageMeta, message: MessageData | None
) -> list[FetchResult]:
    """The response items, in request order, for one message (`message` None only for metadata)."""
    out: list[FetchResult] = []
    for item in items:
        if isinstance(item, BodySection):
            assert message is not None
            out.append(_body_section(item, message))
            continue
        name = item.name
        if name == "FLAGS":
            out.append(FetchFlags(sorted_flags(meta.flags)))
        elif name == "UID":
            out.append(FetchUid(meta.uid))
        elif name == "MODSEQ":
            out.append(FetchModSeq(max(meta.modseq, 1)))
        elif name == "INTERNALDATE":
            out.append(FetchInternalDate(meta.internal_date))
        elif name == "RFC822.SIZE":
            out.append(FetchSize(meta.size))
        else:
            assert message is not None
            out.append(_message_attr(name, message))
    return out


def _message_attr(name: str, message: MessageData) -> FetchResult:
    if name == "ENVELOPE":
        return FetchEnvelope(to_envelope(envelope(message.raw)))
    if name in ("BODY", "BODYSTRUCTURE"):
        extended = name == "BODYSTRUCTURE"
        return FetchBodyStructure(_typed_structure(body_structure(message.structure, extended)), extended)
    if name == "RFC822":
        return FetchRfc822("RFC822", message.raw)
    if name == "RFC822.HEADER":
        return FetchRfc822("RFC822.HEADER", fetch_section(message.raw, SectionSpec(text="HEADER")))
    if name == "RFC822.TEXT":
        return FetchRfc822("RFC822.TEXT", fetch_section(message.raw, SectionSpec(text="TEXT")))
    raise ValueError(f"unknown FETCH item {name}")


def _body_section(item: BodySection, message: MessageData) -> FetchBodySection:
    section = item.section
    spec = SectionSpec(section.parts, section.text, tuple(f.upper() for f in section.fields))
    structure = message.structure if section.parts else None
    data = fetch_section(message.raw, spec, item.partial, structure=structure)
    origin = item.partial[0] if item.partial is not None else None
    return FetchBodySection(section_name(item), data, origin, section.fields)
