"""The NotificationHub's memory: recent events per user (ring buffers) and one feed for the gateways.

Ids grow by one per event and start from the clock at creation (microseconds), so a restarted hub
numbers past every id its predecessor gave out: a client whose `since` predates this instance is
told to resync instead of silently missing what died with the old one. All methods run on the
event loop's thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from whymail.notify.events import LiveEvent


@dataclass(frozen=True, slots=True)
class Catchup:
    """What a reconnecting client missed; `resync` when some of it is no longer kept."""

    events: list[LiveEvent] = field(default_factory=list)
    resync: bool = False
    last_id: int = 0


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Events of the watched users after a gateway's cursor; `gap` when the cursor is too old."""

    events: list[LiveEvent]
    last_id: int
    gap: bool = False


class EventLog:
    """Numbers events and keeps the last `per_user` of each user and the last `feed_size` overall."""

    def __init__(self, per_user: int = 1000, feed_size: int = 20000, first_id: int | None = None) -> None:
        self._per_user = per_user
        self._first_id = first_id if first_id is not None else time.time_ns() // 1000
        self._last_id = self._first_id - 1
        self._users: dict[int, deque[LiveEvent]] = {}
        self._user_evicted: dict[int, int] = {}  # user -> id of the newest event dropped from the ring
        self._feed: deque[LiveEvent] = deque(maxlen=feed_size)
        self._feed_evicted = self._first_id - 1
        self._appended = asyncio.Event()

    @property
    def last_id(self) -> int:
        """The id of the newest event (one less than the first id when there is none yet)."""
        return self._last_id

    def append(self, events: Iterable[LiveEvent]) -> list[LiveEvent]:
        """Number `events` in order, keep them, wake the feed's waiters; returns the numbered events."""
        numbered = []
        for event in events:
            self._last_id += 1
            event = event.model_copy(update={"id": self._last_id})
            ring = self._users.get(event.user_id)
            if ring is None:
                ring = self._users[event.user_id] = deque(maxlen=self._per_user)
            if len(ring) == ring.maxlen:
                self._user_evicted[event.user_id] = ring[0].id
            ring.append(event)
            if len(self._feed) == self._feed.maxlen:
                self._feed_evicted = self._feed[0].id
            self._feed.append(event)
            numbered.append(event)
        if numbered:
            self._wake()
        return numbered

    def _wake(self) -> None:
        self._appended.set()
        self._appended = asyncio.Event()

    def poke(self) -> None:
        """Wake the feed's waiters so they look again (the set of watched users changed)."""
        self._wake()

    def since(self, user_id: int, after_id: int) -> Catchup:
        """The user's events after `after_id`, or resync when some of them were dropped or never kept."""
        too_old = after_id < max(self._first_id - 1, self._user_evicted.get(user_id, 0))
        if too_old or after_id > self._last_id:
            return Catchup(resync=True, last_id=self._last_id)
        ring = self._users.get(user_id, ())
        return Catchup(events=[e for e in ring if e.id > after_id], last_id=self._last_id)

    def feed(self, user_ids: set[int], after_id: int | None) -> FeedPage:
        """Events of `user_ids` after `after_id` (None: start at the end, nothing returned)."""
        if after_id is None:
            return FeedPage(events=[], last_id=self._last_id)
        if after_id < self._feed_evicted or after_id > self._last_id:
            return FeedPage(events=[e for e in self._feed if e.user_id in user_ids], last_id=self._last_id, gap=True)
        events = []
        for event in reversed(self._feed):  # the new events are at the end: walk back to the cursor
            if event.id <= after_id:
                break
            if event.user_id in user_ids:
                events.append(event)
        events.reverse()
        return FeedPage(events=events, last_id=self._last_id)

    async def wait_feed(self, users: Callable[[], set[int]], after_id: int | None, timeout: float) -> FeedPage:
        """Like `feed`, but waits up to `timeout` seconds for a first matching event; `users()` is
        asked again on every wake-up, so a change of the watched set takes effect at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        scanned, watched = after_id, None
        while True:
            current = users()
            if current != watched:  # a new watched set: its users' events since the cursor count too
                scanned, watched = after_id, set(current)
            page = self.feed(current, scanned)
            remaining = deadline - loop.time()
            if page.events or page.gap or after_id is None or remaining <= 0:
                return page
            # Nothing for these users up to here: look only at what comes next, or a flood of other
            # users' events makes every wake-up walk the whole buffer again (quadratic).
            scanned = page.last_id
            try:
                await asyncio.wait_for(self._appended.wait(), remaining)
            except TimeoutError:
                pass

