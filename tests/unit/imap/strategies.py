"""Hypothesis strategies for typed IMAP commands (values in the parser's normalised form)."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from whymail.imap import commands as c
from whymail.imap.fetchitems import SIMPLE_FETCH_ATTRS, BodySection, FetchAttr, Section
from whymail.imap.lexer import ATOM_CHARS, TAG_CHARS
from whymail.imap.searchkeys import (
    DATE_KEYS,
    FLAG_KEYS,
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
from whymail.imap.sequence import MAX_NUMBER, STAR, SequenceSet

texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
tags = st.text(alphabet=sorted(chr(b) for b in TAG_CHARS), min_size=1, max_size=8)
atoms = st.text(alphabet=sorted(chr(b) for b in ATOM_CHARS), min_size=1, max_size=8)
upper_atoms = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-=.", min_size=1, max_size=8)
numbers = st.integers(min_value=1, max_value=MAX_NUMBER)
modseqs = st.integers(min_value=0, max_value=2**63 - 1)
mailboxes = texts.map(lambda name: "INBOX" if name.upper() == "INBOX" else name)
flags = st.one_of(
    st.sampled_from(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]),
    atoms,
    atoms.map(lambda a: "\\" + a).filter(lambda f: f.upper() not in _SYSTEM_UPPER),
)
_SYSTEM_UPPER = {"\\ANSWERED", "\\FLAGGED", "\\DELETED", "\\SEEN", "\\DRAFT", "\\RECENT"}
flag_lists = st.lists(flags, max_size=4).map(tuple)
dates = st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
date_times = st.builds(
    lambda day, seconds, tz: dt.datetime.combine(day, dt.time(), tz) + dt.timedelta(seconds=seconds),
    st.dates(min_value=dt.date(1000, 1, 2), max_value=dt.date(9999, 12, 30)),
    st.integers(min_value=0, max_value=86399),
    offsets,
)


@st.composite
def sequence_sets(draw: st.DrawFn) -> SequenceSet:
    ranges = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        lo = draw(st.one_of(numbers, st.just(STAR)))
        hi = draw(st.one_of(numbers, st.just(STAR)))
        if lo is STAR:
            lo, hi = hi, lo
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            lo, hi = hi, lo
        ranges.append((lo, hi))
    return SequenceSet(tuple(ranges))


def _leaf_keys() -> st.SearchStrategy[SearchKey]:
    return st.one_of(
        st.sampled_from(sorted(FLAG_KEYS)).map(FlagKey),
        st.builds(TextKey, st.sampled_from(sorted(TEXT_KEYS)), texts),
        st.builds(HeaderKey, texts, texts),
        st.builds(KeywordKey, st.sampled_from(["KEYWORD", "UNKEYWORD"]), atoms),
        st.builds(DateKey, st.sampled_from(sorted(DATE_KEYS)), dates),
        st.builds(SizeKey, st.sampled_from(sorted(SIZE_KEYS)), st.integers(0, MAX_NUMBER)),
        st.builds(SequenceKey, sequence_sets()),
        st.builds(UidKey, sequence_sets()),
        st.builds(ModSeqKey, modseqs),
        st.builds(
            ModSeqKey,
            modseqs,
            st.sampled_from(["/flags/\\draft", "/flags/$junk", '/flags/\\"x']),
            st.sampled_from(["PRIV", "SHARED", "ALL"]),
        ),
    )


search_keys = st.recursive(
    _leaf_keys(),
    lambda children: st.one_of(
        st.builds(NotKey, children),
        st.builds(OrKey, children, children),
        st.lists(children, min_size=2, max_size=3).map(lambda keys: AndKey(tuple(keys))),
    ),
    max_leaves=8,
)


@st.composite
def sections(draw: st.DrawFn) -> Section:
    parts = tuple(draw(st.lists(st.integers(1, 1000), max_size=3)))
    choices = [None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"] + (["MIME"] if parts else [])
    text = draw(st.sampled_from(choices))
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        fields = tuple(draw(st.lists(texts, min_size=1, max_size=3)))
    return Section(parts, text, fields)


fetch_items = st.one_of(
    st.sampled_from(sorted(SIMPLE_FETCH_ATTRS)).map(FetchAttr),
    st.builds(
        BodySection,
        sections(),
        st.booleans(),
        st.one_of(st.none(), st.tuples(st.integers(0, MAX_NUMBER), numbers)),
    ),
)


@st.composite
def fetches(draw: st.DrawFn) -> c.Fetch:
    uid = draw(st.booleans())
    changed_since = draw(st.one_of(st.none(), st.integers(1, 2**63 - 1)))
    vanished = uid and changed_since is not None and draw(st.booleans())
    items = tuple(draw(st.lists(fetch_items, min_size=1, max_size=4)))
    return c.Fetch(draw(tags), draw(sequence_sets()), items, uid, changed_since, vanished)


qresync_params = st.builds(
    c.QresyncParams,
    numbers,
    modseqs,
    st.one_of(st.none(), sequence_sets()),
    st.one_of(st.none(), st.tuples(sequence_sets(), sequence_sets())),
)
status_items = st.lists(st.sampled_from(sorted(c.STATUS_ITEMS)), min_size=1, max_size=4).map(tuple)
base64_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", min_size=1)

commands: st.SearchStrategy[c.Command] = st.one_of(
    *(
        st.builds(cls, tags)
        for cls in (
            c.Capability, c.Noop, c.Logout, c.StartTls, c.Check, c.Close, c.Unselect, c.Expunge,
            c.Idle, c.Namespace,
        )
    ),
    st.builds(
        c.Authenticate, tags, upper_atoms,
        st.one_of(st.none(), st.just("="), base64_text, base64_text.map(lambda t: t + "==")),
    ),
    st.builds(c.Login, tags, texts, texts),
    st.builds(c.Select, tags, mailboxes, st.booleans(), st.booleans(), st.one_of(st.none(), qresync_params)),
    st.builds(
        c.Create, tags, mailboxes,
        st.lists(st.sampled_from(["\\Sent", "\\Junk", "\\Drafts", "\\Archive", "\\Flagged"]), max_size=2).map(tuple),
    ),
    *(st.builds(cls, tags, mailboxes) for cls in (c.Delete, c.Subscribe, c.Unsubscribe)),
    st.builds(c.Rename, tags, mailboxes, mailboxes),
    st.builds(
        c.List, tags, texts, st.lists(texts, min_size=1, max_size=3).map(tuple),
        st.lists(upper_atoms, max_size=2).map(tuple),
        st.lists(upper_atoms.filter(lambda a: a != "STATUS"), max_size=2).map(tuple),
        st.one_of(st.none(), status_items),
    ),
    st.builds(c.Lsub, tags, texts, texts),
    st.builds(c.Status, tags, mailboxes, status_items),
    st.builds(
        c.Append, tags, mailboxes,
        st.lists(
            st.builds(c.AppendMessage, flag_lists, st.one_of(st.none(), date_times), st.binary(max_size=40)),
            min_size=1, max_size=3,
        ).map(tuple),
    ),
    st.builds(c.UidExpunge, tags, sequence_sets()),
    st.builds(
        c.Search, tags, search_keys, st.sampled_from([None, "UTF-8", "US-ASCII"]),
        st.one_of(st.none(), st.lists(st.sampled_from(["MIN", "MAX", "ALL", "COUNT", "SAVE"]), max_size=3).map(tuple)),
        st.booleans(),
    ),
    fetches(),
    st.builds(
        c.Store, tags, sequence_sets(), st.sampled_from(["+", "-", ""]), flag_lists, st.booleans(),
        st.one_of(st.none(), modseqs), st.booleans(),
    ),
    st.builds(c.Copy, tags, sequence_sets(), mailboxes, st.booleans()),
    st.builds(c.Move, tags, sequence_sets(), mailboxes, st.booleans()),
    st.builds(
        c.Id, tags,
        st.one_of(st.none(), st.lists(st.tuples(texts, st.one_of(st.none(), texts)), max_size=4).map(tuple)),
    ),
    st.builds(c.Enable, tags, st.lists(upper_atoms, min_size=1, max_size=3).map(tuple)),
)
