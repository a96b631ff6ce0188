"""Sequence sets: `1,3:5,7:*` (RFC 3501 §9 `sequence-set`), for message numbers and UIDs."""

from __future__ import annotations

import bisect
import enum
import functools
from dataclasses import dataclass

MAX_NUMBER = 2**32 - 1  # RFC 3501 §9: nz-number is a 32-bit unsigned integer
MAX_RANGES = 10_000


class Star(enum.Enum):
    """`*`: the largest number in use (last message sequence number or highest UID)."""

    STAR = "*"

    def __str__(self) -> str:
        return "*"


STAR = Star.STAR
Bound = int | Star


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """Ranges as written by the client; a single number `n` is the range (n, n).

    Each range is stored low end first (`5:2` becomes (2, 5), `*:4` becomes (4, STAR)); the order of
    ranges and any overlap between them are kept, so `str()` gives back the canonical text.
    """

    ranges: tuple[tuple[Bound, Bound], ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("a sequence set needs at least one range")
        if len(self.ranges) > MAX_RANGES:
            raise ValueError(f"a sequence set has at most {MAX_RANGES} ranges")
        for lo, hi in self.ranges:
            for bound in (lo, hi):
                if not isinstance(bound, Star) and not 1 <= bound <= MAX_NUMBER:
                    raise ValueError("sequence numbers are between 1 and 4294967295")
            if lo is STAR and hi is not STAR:
                raise ValueError("a range with '*' stores it as its high end")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                raise ValueError("ranges are stored low end first")

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ranges)

    @classmethod
    def of(cls, *numbers: int) -> SequenceSet:
        """A set of single numbers, e.g. `SequenceSet.of(1, 4)` is `1,4`."""
        return cls(tuple((n, n) for n in numbers))

    @property
    def uses_star(self) -> bool:
        return any(hi is STAR for _, hi in self.ranges)

    def resolve(self, max_value: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges with `*` replaced by `max_value`.

        Numbers above `max_value` are kept: callers intersect with what exists (UID commands ignore
        missing UIDs, sequence-number commands reject them). `n:*` with n > max_value covers
        max_value:n (RFC 3501 §6.4.8: "559:*" includes the last UID). In an empty mailbox
        (max_value == 0) a range containing `*` matches nothing (RFC 9051 §6.4.9).
        """
        spans: list[tuple[int, int]] = []
        for lo, hi in self.ranges:
            if hi is STAR:
                if max_value <= 0:
                    continue
                low = max_value if lo is STAR else lo
                spans.append((min(low, max_value), max(low, max_value)))
            else:
                assert isinstance(lo, int)
                spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def contains(self, number: int, max_value: int) -> bool:
        """Whether `number` is in the set when `*` stands for `max_value` (O(log n) once resolved)."""
        starts, merged = _resolved(self, max_value)
        index = bisect.bisect_right(starts, number) - 1
        return index >= 0 and merged[index][0] <= number <= merged[index][1]


@functools.lru_cache(maxsize=64)
def _resolved(sequence_set: SequenceSet, max_value: int) -> tuple[list[int], list[tuple[int, int]]]:
    # SEARCH/FETCH test every message against one set: resolve it once, not once per message.
    merged = sequence_set.resolve(max_value)
    return [lo for lo, _ in merged], merged


def parse_sequence_set(text: str) -> SequenceSet:
    """Parse RFC 3501 `sequence-set` text; ValueError on anything else (0, empty parts, overflow)."""
    if not text:
        raise ValueError("empty sequence set")
    parts = text.split(",")
    if len(parts) > MAX_RANGES:
        raise ValueError(f"a sequence set has at most {MAX_RANGES} ranges")
    ranges: list[tuple[Bound, Bound]] = []
    for part in parts:
        ends = part.split(":")
        if len(ends) == 1:
            number = _parse_seq_number(ends[0])
            ranges.append((number, number))
        elif len(ends) == 2:
            ranges.append(_ordered(_parse_seq_number(ends[0]), _parse_seq_number(ends[1])))
        else:
            raise ValueError("a sequence range has one ':'")
    return SequenceSet(tuple(ranges))


def _parse_seq_number(text: str) -> Bound:
    if text == "*":
        return STAR
    if not text or not text.isascii() or not text.isdigit() or text[0] == "0":
        raise ValueError("sequence numbers are non-zero decimal numbers or '*'")
    if len(text) > 10 or int(text) > MAX_NUMBER:
        raise ValueError("sequence number is larger than 4294967295")
    return int(text)


def _ordered(a: Bound, b: Bound) -> tuple[Bound, Bound]:
    if a is STAR:
        return (b, STAR)
    if b is STAR:
        return (a, STAR)
    assert isinstance(a, int) and isinstance(b, int)
    return (min(a, b), max(a, b))
