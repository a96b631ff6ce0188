"""Background batching shared by the event publisher, the notification writer and the audit batcher:
callers only append (never wait); one loop drains what gathered, in batches."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class GatheringFlusher:
    """`run()` waits for a wake-up, lets a batch gather for `_interval` seconds unless `_max_batch`
    items already wait, then awaits `flush()`; nothing a flush meets stops the loop.

    Subclasses set `_wake` (an asyncio.Event set when something is appended), `_pending`,
    `_interval`, `_max_batch` and `_what` (for the log), and implement `flush()`.
    """

    _what = "batch"
    _wake: asyncio.Event
    _pending: object
    _interval: float
    _max_batch: int

    async def flush(self) -> None:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < self._max_batch:  # type: ignore[arg-type]
                await asyncio.sleep(self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the loop must survive anything a flush meets
                log.exception("%s flush failed", self._what)
