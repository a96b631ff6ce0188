"""Putting messages into the outbound queue: spool files first, then the rows, in that order.

Used by SMTP submission, forwards, DSNs and (later) the API's send: the caller answers its client
only after this returns, so an accepted message is always on disk and in `outbound_queue`.

`SubmitBatcher` follows DESIGN.md's batching rule: submissions that arrive while a write is in
flight go together in the next one — their spool files written in one parallel job with shared
directory fsyncs, their rows inserted (with the NOTIFY that wakes the DeliveryQueues) in one
statement.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from dataclasses import dataclass

import asyncpg

from whymail.config import QueueConfig
from whymail.queue import store
from whymail.queue.spool import Spool

log = logging.getLogger("whymail.queue.submit")


@dataclass(slots=True)
class Submission:
    data: bytes
    sender: str
    recipients: list[str]
    user_id: int | None
    delivery_id: uuid.UUID
    priority: int = 0
    envid: str | None = None
    ret: str | None = None


async def queue_message(
    pool: asyncpg.Pool,
    spool: Spool,
    queue: QueueConfig,
    *,
    data: bytes,
    sender: str,
    recipients: list[str],
    user_id: int | None,
    delivery_id: uuid.UUID | None = None,
    priority: int = 0,
    envid: str | None = None,
    ret: str | None = None,
    executor: concurrent.futures.Executor | None = None,
) -> uuid.UUID:
    """Spool `data` durably and insert its queue rows (one per recipient domain); returns the id."""
    submission = Submission(data, sender, recipients, user_id, delivery_id or uuid.uuid4(), priority, envid, ret)
    await _write([submission], pool, spool, queue, executor)
    return submission.delivery_id


async def _write(
    batch: list[Submission],
    pool: asyncpg.Pool,
    spool: Spool,
    queue: QueueConfig,
    executor: concurrent.futures.Executor | None,
) -> None:
    paths = await spool.write_many([(s.delivery_id, s.data) for s in batch], executor)
    try:
        async with pool.acquire() as conn:
            await store.enqueue_many(
                conn,
                [
                    store.NewEntry(
                        delivery_id=s.delivery_id, user_id=s.user_id, sender=s.sender, recipients=s.recipients,
                        message_path=path, size=len(s.data), priority=s.priority, envid=s.envid, ret=s.ret,
                    )
                    for s, path in zip(batch, paths, strict=True)
                ],
                max_attempts=queue.max_retries + 1,
                lifetime=queue.max_lifetime,
            )
    except BaseException:
        spool.remove(paths)
        raise


class SubmitBatcher:
    """One spool+INSERT write in flight; whatever arrives meanwhile rides in the next one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        spool: Spool,
        queue: QueueConfig,
        executor: concurrent.futures.Executor | None = None,
        max_items: int = 200,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._queue_config = queue
        self._executor = executor
        self._max_items = max_items
        self._waiting: list[tuple[Submission, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.writes = 0
        self.items = 0

    async def submit(
        self, data: bytes, sender: str, recipients: list[str], user_id: int | None, *, priority: int = 0,
        delivery_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Queue one message; `delivery_id` (default: a new one) makes a resubmission idempotent."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        submission = Submission(data, sender, list(recipients), user_id, delivery_id or uuid.uuid4(), priority)
        self._waiting.append((submission, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await future
        return submission.delivery_id

    async def _run(self) -> None:
        while self._waiting:
            taken = [item for item in self._waiting[: self._max_items] if not item[1].done()]
            del self._waiting[: self._max_items]
            if not taken:
                continue
            try:
                await _write([s for s, _ in taken], self._pool, self._spool, self._queue_config, self._executor)
            except Exception as exc:
                log.error("queueing %d message(s) failed: %r", len(taken), exc)
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.writes += 1
            self.items += len(taken)
            for _, future in taken:
                if not future.done():
                    future.set_result(None)
