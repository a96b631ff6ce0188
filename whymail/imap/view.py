"""A session's own view of its selected mailbox, and how storage changes reach it (RFC 3501 §7.4.1).

Sequence numbers are positions in `uids`. The view changes only when the session says so: new
messages and flag changes are announced whenever a command ends, but an expunge seen while the
client may be relying on sequence numbers (FETCH, STORE, SEARCH, COPY) is held back in
`pending_expunge` until a command during which EXPUNGE responses are allowed.
"""

from __future__ import annotations

import bisect

from whymail.imap.fetch_data import FetchFlags, FetchModSeq, FetchUid
from whymail.imap.fetch_eval import sorted_flags
from whymail.imap.responses import Exists, Expunge, Fetch, Response
from whymail.imap.sequence import SequenceSet
from whymail.imap.storage import Changes, MailboxInfo, MessageMeta


class BadSequence(Exception):
    """A message sequence number beyond EXISTS (the command gets BAD)."""


def format_set(numbers: list[int] | tuple[int, ...]) -> str:
    """`[1, 2, 3, 5]` -> `1:3,5` (input order is not needed)."""
    ordered = sorted(set(numbers))
    ranges: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


class MailboxView:
    """The selected mailbox as this session has announced it to its client."""

    def __init__(self, info: MailboxInfo, metas: list[MessageMeta], read_only: bool) -> None:
        self.info = info
        self.mailbox_id = info.id
        self.read_only = read_only
        self.uids: list[int] = [m.uid for m in metas]
        self.metas: dict[int, MessageMeta] = {m.uid: m for m in metas}
        self.modseq = info.highestmodseq
        self.uidnext = info.uidnext
        self.pending_expunge: set[int] = set()

    def __len__(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int:
        """1-based sequence number of a UID in the view."""
        index = bisect.bisect_left(self.uids, uid)
        if index == len(self.uids) or self.uids[index] != uid:
            raise KeyError(uid)
        return index + 1

    def resolve(self, sequence_set: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) pairs in ascending order; BadSequence for a number above EXISTS."""
        if uid:
            last = self.uids[-1] if self.uids else 0
            pairs: list[tuple[int, int]] = []
            for lo, hi in sequence_set.resolve(last):
                start = bisect.bisect_left(self.uids, lo)
                end = bisect.bisect_right(self.uids, hi)
                pairs.extend((i + 1, self.uids[i]) for i in range(start, end))
            return pairs
        spans = sequence_set.resolve(len(self.uids))
        if spans and spans[-1][1] > len(self.uids):
            raise BadSequence("invalid message sequence number")
        return [(seq, self.uids[seq - 1]) for lo, hi in spans for seq in range(lo, hi + 1)]

    def update_meta(self, meta: MessageMeta) -> None:
        """Record a change this session made itself (already announced by the command)."""
        if meta.uid in self.metas:
            self.metas[meta.uid] = meta

    def remove(self, uids: list[int] | tuple[int, ...]) -> list[Response]:
        """Drop expunged messages, one EXPUNGE each with the sequence number current at that moment."""
        out: list[Response] = []
        for uid in sorted(set(uids)):
            self.pending_expunge.discard(uid)
            if uid not in self.metas:
                continue
            seq = self.seq_of(uid)
            del self.uids[seq - 1]
            del self.metas[uid]
            out.append(Expunge(seq))
        return out

    def flag_update(self, seq: int, meta: MessageMeta, condstore: bool) -> Fetch:
        items: list = [FetchUid(meta.uid), FetchFlags(sorted_flags(meta.flags))]
        if condstore:
            items.append(FetchModSeq(max(meta.modseq, 1)))
        return Fetch(seq, tuple(items))

    def apply(self, changes: Changes, *, allow_expunge: bool, condstore: bool) -> list[Response]:
        """Untagged updates for `changes`, applied to the view; idempotent for changes already seen."""
        out: list[Response] = []
        expunged = set(changes.expunged)
        self.pending_expunge.update(uid for uid in expunged if uid in self.metas)
        if allow_expunge and self.pending_expunge:
            out.extend(self.remove(sorted(self.pending_expunge)))
        last = self.uids[-1] if self.uids else 0
        new: list[MessageMeta] = []
        for meta in (*changes.added, *changes.updated):
            old = self.metas.get(meta.uid)
            if old is not None:
                if meta.uid in self.pending_expunge:
                    continue
                self.metas[meta.uid] = meta
                if old.flags != meta.flags or (condstore and meta.modseq != old.modseq):
                    out.append(self.flag_update(self.seq_of(meta.uid), meta, condstore))
            elif meta.uid > last and meta.uid not in expunged:
                new.append(meta)
        if new:
            for meta in sorted(new, key=lambda m: m.uid):
                if meta.uid not in self.metas:
                    self.uids.append(meta.uid)
                    self.metas[meta.uid] = meta
            out.append(Exists(len(self.uids)))
        self.modseq = max(self.modseq, changes.highestmodseq)
        self.uidnext = max(self.uidnext, changes.uidnext)
        return out
