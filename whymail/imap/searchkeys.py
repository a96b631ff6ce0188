"""SEARCH criteria (RFC 3501 §6.4.4, RFC 7162 §3.1.5 MODSEQ) as a small tree of typed keys."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from whymail.imap.sequence import SequenceSet

# Keys without arguments.
FLAG_KEYS = frozenset(
    {
        "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
        "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
    }
)
TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
SIZE_KEYS = frozenset({"LARGER", "SMALLER"})
KEYWORD_KEYS = frozenset({"KEYWORD", "UNKEYWORD"})
MODSEQ_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})


@dataclass(frozen=True, slots=True)
class FlagKey:
    """ALL, SEEN, UNDELETED, NEW, …: a key without arguments."""

    name: str


@dataclass(frozen=True, slots=True)
class TextKey:
    """FROM/TO/CC/BCC/SUBJECT/BODY/TEXT "value": case-insensitive substring match."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """HEADER field-name "value"."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class KeywordKey:
    """KEYWORD flag / UNKEYWORD flag."""

    name: str
    keyword: str


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header)."""

    name: str
    date: dt.date


@dataclass(frozen=True, slots=True)
class SizeKey:
    """LARGER n / SMALLER n (RFC822.SIZE)."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class SequenceKey:
    """A bare sequence set: messages by sequence number."""

    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class UidKey:
    """UID sequence-set."""

    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """MODSEQ ["entry-name" priv|shared|all] modseq (RFC 7162 §3.1.5): mod-sequence >= value."""

    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    """Juxtaposed keys, or a parenthesised group; always at least two keys."""

    keys: tuple[SearchKey, ...]

    def __post_init__(self) -> None:
        if len(self.keys) < 2:
            raise ValueError("AndKey joins at least two keys")


SearchKey = (
    FlagKey | TextKey | HeaderKey | KeywordKey | DateKey | SizeKey | SequenceKey | UidKey | ModSeqKey
    | NotKey | OrKey | AndKey
)
