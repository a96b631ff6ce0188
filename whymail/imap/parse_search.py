"""Parsing of SEARCH programs (RFC 3501 §6.4.4, RFC 4466/4731 RETURN, RFC 7162 MODSEQ)."""

from __future__ import annotations

from whymail.imap.lexer import MAX_MODSEQ, SEQUENCE_CHARS, Cursor
from whymail.imap.searchkeys import (
    DATE_KEYS,
    FLAG_KEYS,
    KEYWORD_KEYS,
    MODSEQ_ENTRY_TYPES,
    SIZE_KEYS,
    TEXT_KEYS,
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

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
MAX_DEPTH = 50  # nesting of NOT/OR/parentheses, so hostile input cannot exhaust the stack
MAX_KEYS = 1000
_KEYS_WITH_ARGUMENTS = TEXT_KEYS | DATE_KEYS | SIZE_KEYS | KEYWORD_KEYS | {"HEADER", "UID", "MODSEQ"}


def parse_search_program(cur: Cursor) -> tuple[str | None, SearchKey]:
    """`[CHARSET astring SP] search-key *(SP search-key)` up to the end of the command."""
    charset: str | None = None
    if cur.maybe(b"CHARSET "):
        charset = cur.astring_text().upper()
        if charset not in SUPPORTED_CHARSETS:
            raise cur.error("unsupported charset", code="BADCHARSET (US-ASCII UTF-8)")
        cur.sp()
    budget = [MAX_KEYS]
    keys = [_search_key(cur, 0, budget)]
    while not cur.at_end():
        cur.sp()
        keys.append(_search_key(cur, 0, budget))
    return charset, keys[0] if len(keys) == 1 else AndKey(tuple(keys))


def parse_search_return(cur: Cursor) -> tuple[str, ...]:
    """RFC 4731 `RETURN (MIN MAX ALL COUNT SAVE)`; `RETURN ()` is returned as ()."""
    options = cur.keyword_list("search return options")
    for option in options:
        if option not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
            raise cur.error("unknown SEARCH RETURN option")
    return options


def _search_key(cur: Cursor, depth: int, budget: list[int]) -> SearchKey:
    if depth > MAX_DEPTH:
        raise cur.error("search criteria are nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise cur.error("too many search criteria")
    first = cur.peek()
    if first is not None and first in SEQUENCE_CHARS:
        return SequenceKey(cur.sequence_set())
    if cur.maybe(b"("):
        keys = [_search_key(cur, depth + 1, budget)]
        while not cur.maybe(b")"):
            cur.sp()
            keys.append(_search_key(cur, depth + 1, budget))
        return keys[0] if len(keys) == 1 else AndKey(tuple(keys))
    name = cur.keyword("a search key")
    if name in FLAG_KEYS:
        return FlagKey(name)
    if name == "NOT":
        cur.sp()
        return NotKey(_search_key(cur, depth + 1, budget))
    if name == "OR":
        cur.sp()
        left = _search_key(cur, depth + 1, budget)
        cur.sp()
        return OrKey(left, _search_key(cur, depth + 1, budget))
    if name not in _KEYS_WITH_ARGUMENTS:
        raise cur.error(f"unknown search key {name[:20]}")
    cur.sp()
    if name in TEXT_KEYS:
        return TextKey(name, cur.astring_text())
    if name in DATE_KEYS:
        return DateKey(name, cur.date())
    if name in SIZE_KEYS:
        return SizeKey(name, cur.number())
    if name in KEYWORD_KEYS:
        return KeywordKey(name, cur.atom("a keyword"))
    if name == "HEADER":
        field = cur.astring_text()
        cur.sp()
        return HeaderKey(field, cur.astring_text())
    if name == "UID":
        return UidKey(cur.sequence_set())
    return _modseq_key(cur)


def _modseq_key(cur: Cursor) -> ModSeqKey:
    # RFC 7162 §3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer
    if cur.peek() == 0x22:
        entry_name = cur.text(cur.quoted())
        cur.sp()
        entry_type = cur.keyword("an entry type")
        if entry_type not in MODSEQ_ENTRY_TYPES:
            raise cur.error("MODSEQ entry type is priv, shared or all")
        cur.sp()
        return ModSeqKey(cur.number(MAX_MODSEQ), entry_name, entry_type)
    return ModSeqKey(cur.number(MAX_MODSEQ))
