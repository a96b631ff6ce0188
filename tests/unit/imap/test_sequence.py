"""Sequence sets (RFC 3501 §9 `sequence-set`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.imap.sequence import MAX_NUMBER, STAR, SequenceSet, parse_sequence_set

numbers = st.integers(min_value=1, max_value=MAX_NUMBER)
bounds = st.one_of(numbers, st.just(STAR))


def _text_range(lo: int | None, hi: int | None) -> str:
    return f"{'*' if lo is None else lo}:{'*' if hi is None else hi}"


@st.composite
def sequence_texts(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(
                numbers.map(str),
                st.just("*"),
                st.tuples(st.one_of(numbers, st.none()), st.one_of(numbers, st.none())).map(
                    lambda pair: _text_range(*pair)
                ),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return ",".join(parts)


def test_parse_and_canonical_text() -> None:
    seqs = parse_sequence_set("5:2,*,7:*,*:9,1")
    assert seqs.ranges == ((2, 5), (STAR, STAR), (7, STAR), (9, STAR), (1, 1))
    assert str(seqs) == "2:5,*,7:*,9:*,1"


@pytest.mark.parametrize(
    "bad", ["", "0", "1:0", ",", "1,", ",1", "1::2", "1:2:3", "a", "-1", "4294967296", "01", "1 2", "$"]
)
def test_invalid_sets_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_sequence_set(bad)


def test_too_many_ranges_are_rejected() -> None:
    parse_sequence_set(",".join(["1"] * 10_000))
    with pytest.raises(ValueError):
        parse_sequence_set(",".join(["1"] * 10_001))


def test_resolve_merges_and_substitutes_star() -> None:
    assert parse_sequence_set("1:3,2:5,7,8,10:*").resolve(12) == [(1, 5), (7, 8), (10, 12)]
    assert parse_sequence_set("*").resolve(7) == [(7, 7)]


def test_star_range_above_max_includes_last_message() -> None:
    # RFC 3501 §6.4.8: "559:*" always includes the UID of the last message.
    assert parse_sequence_set("559:*").resolve(100) == [(100, 559)]
    assert parse_sequence_set("559:*").contains(100, 100)


def test_star_in_empty_mailbox_matches_nothing() -> None:
    assert parse_sequence_set("1:*").resolve(0) == []
    assert parse_sequence_set("*,3").resolve(0) == [(3, 3)]
    assert not parse_sequence_set("*").contains(0, 0)


def test_constructor_enforces_invariants() -> None:
    with pytest.raises(ValueError):
        SequenceSet(((5, 2),))
    with pytest.raises(ValueError):
        SequenceSet(((STAR, 3),))
    with pytest.raises(ValueError):
        SequenceSet(())
    assert str(SequenceSet.of(1, 4)) == "1,4"


@given(sequence_texts())
def test_canonical_text_round_trips(text: str) -> None:
    seqs = parse_sequence_set(text)
    assert parse_sequence_set(str(seqs)) == seqs
    assert str(parse_sequence_set(str(seqs))) == str(seqs)


@given(sequence_texts(), st.integers(min_value=0, max_value=50))
def test_resolve_is_sorted_disjoint_and_matches_contains(text: str, max_value: int) -> None:
    seqs = parse_sequence_set(text)
    resolved = seqs.resolve(max_value)
    for (lo, hi), (next_lo, _) in zip(resolved, resolved[1:], strict=False):
        assert lo <= hi < next_lo - 1
    for n in range(1, 60):
        expected = any(_in_range(n, lo, hi, max_value) for lo, hi in seqs.ranges)
        assert seqs.contains(n, max_value) == expected


def _in_range(n: int, lo: object, hi: object, max_value: int) -> bool:
    if max_value == 0 and STAR in (lo, hi):
        return False
    low = max_value if lo is STAR else lo
    high = max_value if hi is STAR else hi
    assert isinstance(low, int) and isinstance(high, int)
    return min(low, high) <= n <= max(low, high)
