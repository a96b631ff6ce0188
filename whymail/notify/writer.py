"""Notifications written off the hot path, in batches, then announced live.

A component that creates many notifications (the outbound queue: one per finished submission) hands
them to a `NotificationWriter`: `add` and `queue_entry_dead` never wait and never fail. A background
task (`run`) stores what gathered in one INSERT per `interval` and passes the stored rows, as live
`notification` events, to `announce` (an `EventPublisher.publish`, which sends them to the hub in
batches of its own). Entries that went dead meanwhile become one `system_alert` per active admin,
with their count, rather than one alert each.

Like live events, notifications here are best effort: while the database is away the oldest are
dropped past `max_pending`, and a delivery never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable

import asyncpg

from whymail.flushing import GatheringFlusher
from whymail.notify import alerts
from whymail.notify.store import NewNotification, insert_notifications, notification_event

log = logging.getLogger(__name__)


class NotificationWriter(GatheringFlusher):
    """Buffers notifications (and dead-letter reports) and stores them in batches; see the module."""

    _what = "notification"

    def __init__(
        self, pool: asyncpg.Pool, announce: alerts.Announce | None = None, *, interval: float = 0.05,
        max_batch: int = 1000, max_pending: int = 20000, timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._announce = announce
        self._interval = interval
        self._max_batch = max_batch
        self._timeout = timeout
        self._pending: deque[NewNotification] = deque(maxlen=max_pending)
        self._dead: list[alerts.DeadEntry] = []
        self._wake = asyncio.Event()
        self.stored = 0
        self.dropped = 0

    def add(self, items: Iterable[NewNotification]) -> None:
        """Queue notifications for the next batch; never blocks."""
        for item in items:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(item)
        self._wake.set()

    def queue_entry_dead(self, entry: alerts.DeadEntry) -> None:
        """A queue entry was given up: the admins get a `system_alert` at the next flush."""
        if len(self._dead) < self._pending.maxlen:
            self._dead.append(entry)
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._pending and not self._dead

    async def flush(self) -> None:
        """Store everything queued now (in batches of `max_batch`) and announce what was stored."""
        dead, self._dead = self._dead, []
        if dead:
            try:
                async with self._pool.acquire() as conn:
                    admins = await asyncio.wait_for(alerts.admin_ids(conn), self._timeout)
                    total = await asyncio.wait_for(alerts.dead_entries_in_queue(conn), self._timeout)
                self.add(alerts.dead_letter_alerts(admins, dead, total))
            except Exception as exc:
                self.dropped += len(dead)
                log.error("system alert for %d dead queue entries not created: %r", len(dead), exc)
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            try:
                async with self._pool.acquire() as conn:
                    stored = await asyncio.wait_for(insert_notifications(conn, batch), self._timeout)
            except Exception as exc:
                self.dropped += len(batch)
                log.error("%d notifications (%s, ...) not stored: %r", len(batch), batch[0].type, exc)
                continue
            self.stored += len(stored)
            if stored and self._announce is not None:
                try:
                    self._announce([notification_event(n) for n in stored])
                except Exception as exc:
                    log.warning("%d stored notifications not announced: %r", len(stored), exc)
