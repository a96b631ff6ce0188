"""Batching of deliveries towards one shard: at most one call in flight, the rest waits and rides along.

DESIGN.md's batching rule: a Ray call costs ~1 ms, so messages that arrive while a call is in flight
are sent together in the next call. A failed call (shard restarting) is retried with the same
delivery ids, which the shard stores idempotently, until `retry_for` seconds have passed; after that
the waiting sessions get a transient failure and the client tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from whymail.store.models import DeliveryBatch, DeliveryItem, DeliveryOutcome, DeliveryReport

log = logging.getLogger(__name__)

SendBatch = Callable[[DeliveryBatch], Awaitable[DeliveryReport]]


def _unavailable(item: DeliveryItem) -> DeliveryOutcome:
    return DeliveryOutcome(
        delivery_id=item.delivery_id, ok=False, error_code=451, error_enhanced="4.3.0",
        error_text="Mail store temporarily unavailable, try again later",
    )


class _Pending:
    __slots__ = ("body", "items", "future")

    def __init__(self, body: bytes, items: list[DeliveryItem], future: asyncio.Future) -> None:
        self.body = body
        self.items = items
        self.future = future


class ShardBatcher:
    """Collects deliveries for one shard and sends them in batches, one call at a time."""

    def __init__(
        self,
        send: SendBatch,
        *,
        max_items: int = 500,
        max_bytes: int = 32 * 1024 * 1024,
        retry_for: float = 20.0,
        on_usage: Callable[[dict[int, int]], None] | None = None,
        max_in_flight: int = 1,
        first_attempt: int = 0,
    ) -> None:
        self._send = send
        # > 0: every batch is checked for duplicates (callers that may resend after their own crash).
        self._first_attempt = first_attempt
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[asyncio.Task] = set()
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._retry_for = retry_for
        self._on_usage = on_usage
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.calls = 0
        self.items_sent = 0

    async def submit(self, body: bytes, items: list[DeliveryItem]) -> list[DeliveryOutcome]:
        """Deliver `body` for `items` (their body_index is ignored); one outcome per item."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(body, items, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        count = size = 0
        while self._queue:
            nxt = self._queue[0]
            if nxt.future.done():
                # The session is gone (client hung up, timeout): it never got a 250, so do not store.
                self._queue.pop(0)
                continue
            if taken and (count + len(nxt.items) > self._max_items or size + len(nxt.body) > self._max_bytes):
                break
            taken.append(self._queue.pop(0))
            count += len(nxt.items)
            size += len(nxt.body)
        return taken

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=30)
                except TimeoutError:
                    if not self._queue:
                        return
                continue
            await self._slots.acquire()
            taken = self._take()
            if not taken:
                self._slots.release()
                continue
            task = asyncio.create_task(self._deliver(taken))
            self._in_flight.add(task)
            task.add_done_callback(self._call_done)

    def _call_done(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self._slots.release()


    async def _deliver(self, taken: list[_Pending]) -> None:
        try:
            await self._deliver_batch(taken)
        except Exception:  # never leave a session waiting: answer "try again later"
            log.exception("delivery batch failed unexpectedly")
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_result([_unavailable(item) for item in pending.items])

    async def _deliver_batch(self, taken: list[_Pending]) -> None:
        bodies: list[bytes] = []
        items: list[DeliveryItem] = []
        for index, pending in enumerate(taken):
            bodies.append(pending.body)
            items.extend(item.model_copy(update={"body_index": index}) for item in pending.items)
        batch = DeliveryBatch(bodies=bodies, items=items, attempt=self._first_attempt)
        report = await self._send_with_retry(batch)
        if report is not None and len(report.outcomes) != len(items):
            log.error("shard answered %d outcomes for %d items", len(report.outcomes), len(items))
            report = None
        if report is None:
            outcomes = [_unavailable(item) for item in items]
        else:
            outcomes = report.outcomes
            if self._on_usage and report.usage:
                self._on_usage(report.usage)
        self.calls += 1
        self.items_sent += len(items)
        position = 0
        for pending in taken:
            n = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(outcomes[position : position + n])
            position += n

    async def _send_with_retry(self, batch: DeliveryBatch) -> DeliveryReport | None:
        deadline = time.monotonic() + self._retry_for
        delay = 0.1
        while True:
            try:
                return await self._send(batch)
            except Exception as exc:  # the shard died or is restarting: retry, ids make it idempotent
                if time.monotonic() + delay > deadline:
                    log.error("shard call failed for good after retries: %r", exc)
                    return None
                log.warning("shard call failed (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                batch = batch.model_copy(update={"attempt": batch.attempt + 1})
                delay = min(delay * 2, 2.0)
