"""The MailboxShard's side of live events: buffer what committed, send it to the hub in batches.

`publish` and `mailbox_changed` never wait and never fail, so a delivery does not get slower or
break when the hub is slow or down. A background task (`run`) flushes every `interval` seconds (or at
once past `max_batch` events) with at most one send in flight; while the hub does not answer, events
pile up to `max_pending` and the oldest are dropped (live events are best effort: the truth is in
PostgreSQL, and clients resync). Changed mailboxes become `folder_count` events at flush time, one
per mailbox however many changes it had.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from whymail.flushing import GatheringFlusher
from whymail.notify.events import LiveEvent

log = logging.getLogger(__name__)

SendEvents = Callable[[list[LiveEvent]], Awaitable[object]]
LoadCounts = Callable[[list[int]], Awaitable[list[LiveEvent]]]


class EventPublisher(GatheringFlusher):
    """Buffers live events and folder changes; `run()` sends them in batches through `send`."""

    _what = "live event"

    def __init__(
        self, send: SendEvents, *, load_counts: LoadCounts | None = None, interval: float = 0.05,
        max_batch: int = 500, max_pending: int = 20000, send_timeout: float = 5.0,
    ) -> None:
        self._send = send
        self._load_counts = load_counts
        self._interval = interval
        self._max_batch = max_batch
        self._send_timeout = send_timeout
        self._pending: deque[LiveEvent] = deque(maxlen=max_pending)
        self._changed: dict[int, None] = {}  # mailbox ids, insertion-ordered
        self._wake = asyncio.Event()
        self.dropped = 0  # events lost to a full buffer or a failed send
        self.sent = 0

    def publish(self, events: Iterable[LiveEvent]) -> None:
        """Queue events (after their commit); never blocks."""
        for event in events:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(event)
        self._wake.set()

    def mailbox_changed(self, mailbox_id: int) -> None:
        """A mailbox's counters may have changed: a `folder_count` follows at the next flush."""
        self._changed[mailbox_id] = None
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._pending and not self._changed

    async def flush(self) -> None:
        """Send everything queued now (folder counts first loaded from the database)."""
        changed, self._changed = list(self._changed), {}
        if changed and self._load_counts is not None:
            try:
                self.publish(await asyncio.wait_for(self._load_counts(changed), self._send_timeout))
            except Exception as exc:
                log.warning("folder counts for %d mailboxes not loaded: %r", len(changed), exc)
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            try:
                await asyncio.wait_for(self._send(batch), self._send_timeout)
                self.sent += len(batch)
            except Exception as exc:
                self.dropped += len(batch)
                log.warning("%d live events not delivered to the hub: %r", len(batch), exc)
