"""Parsing of FETCH item lists and their RFC 7162 modifiers (RFC 3501 §6.4.5)."""

from __future__ import annotations

from whymail.imap.fetchitems import (
    FETCH_MACROS,
    SIMPLE_FETCH_ATTRS,
    BodySection,
    FetchAttr,
    FetchItem,
    Section,
)
from whymail.imap.lexer import MAX_MODSEQ, Cursor

MAX_FETCH_ITEMS = 100
MAX_SECTION_DEPTH = 100
_DIGITS = frozenset(b"0123456789")


def parse_fetch_items(cur: Cursor) -> tuple[FetchItem, ...]:
    """A macro (ALL / FAST / FULL, expanded), one item, or a parenthesised list of items."""
    if cur.maybe(b"("):
        items = [_fetch_item(cur)]
        while not cur.maybe(b")"):
            cur.sp()
            items.append(_fetch_item(cur))
            if len(items) > MAX_FETCH_ITEMS:
                raise cur.error("too many FETCH items")
        return tuple(items)
    start = cur.pos
    name = cur.item_name("a FETCH item")
    if name in FETCH_MACROS:
        return tuple(FetchAttr(n) for n in FETCH_MACROS[name])
    cur.pos = start
    return (_fetch_item(cur),)


def parse_fetch_modifiers(cur: Cursor) -> tuple[int | None, bool]:
    """`(CHANGEDSINCE n [VANISHED])` in any order; returns (changed_since, vanished)."""
    changed_since: int | None = None
    vanished = False
    cur.expect(b"(")
    first = True
    while not cur.maybe(b")"):
        if not first:
            cur.sp()
        first = False
        name = cur.keyword("a FETCH modifier")
        if name == "CHANGEDSINCE" and changed_since is None:
            cur.sp()
            changed_since = cur.number(MAX_MODSEQ, "a mod-sequence")
            if changed_since == 0:
                raise cur.error("CHANGEDSINCE needs a non-zero mod-sequence")
        elif name == "VANISHED" and not vanished:
            vanished = True
        else:
            raise cur.error("unknown or repeated FETCH modifier")
    if vanished and changed_since is None:
        raise cur.error("VANISHED requires CHANGEDSINCE (RFC 7162 §3.2.6)")
    return changed_since, vanished


def _fetch_item(cur: Cursor) -> FetchItem:
    name = cur.item_name("a FETCH item")
    if name in ("BODY", "BODY.PEEK") and cur.peek() == 0x5B:
        section = _section(cur)
        partial = None
        if cur.maybe(b"<"):
            origin = cur.number()
            cur.expect(b".")
            size = cur.nz_number("a non-zero partial size")
            cur.expect(b">")
            partial = (origin, size)
        return BodySection(section, peek=name == "BODY.PEEK", partial=partial)
    if name in SIMPLE_FETCH_ATTRS:
        return FetchAttr(name)
    raise cur.error(f"unknown FETCH item {name[:20]}")


def _section(cur: Cursor) -> Section:
    """`[` [part *("." part)] ["." text] `]` where text is HEADER / HEADER.FIELDS (..) / TEXT / MIME."""
    # The atom lexer stops at "[" and "]" is excluded from atoms, so read the section by hand.
    cur.expect(b"[")
    parts: list[int] = []
    text: str | None = None
    fields: tuple[str, ...] = ()
    while (cur.peek() or 0) in _DIGITS:
        parts.append(cur.nz_number("a part number"))
        if len(parts) > MAX_SECTION_DEPTH:
            raise cur.error("section part path is too deep")
        if not cur.maybe(b"."):
            break
    if parts and cur.data[cur.pos - 1] != 0x2E and cur.peek() != 0x5D:
        raise cur.error("expected '.' or ']' after a part number")
    if cur.peek() != 0x5D:
        text = cur.item_name("a section text")
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            cur.sp()
            fields = _header_list(cur)
        elif text not in ("HEADER", "TEXT", "MIME"):
            raise cur.error(f"unknown section text {text[:20]}")
        if text == "MIME" and not parts:
            raise cur.error("MIME needs a part number")
    elif parts and cur.data[cur.pos - 1] == 0x2E:
        raise cur.error("section ends with '.'")
    cur.expect(b"]")
    return Section(tuple(parts), text, fields)


def _header_list(cur: Cursor) -> tuple[str, ...]:
    cur.expect(b"(", "a header field list")
    fields = [cur.astring_text()]
    while not cur.maybe(b")"):
        cur.sp()
        fields.append(cur.astring_text())
        if len(fields) > MAX_FETCH_ITEMS:
            raise cur.error("too many header fields")
    return tuple(fields)
