"""Putting a message into the outbound queue: spool file first, then the rows, in that order.

Used by SMTP submission, DSNs and (later) the API's send: the caller answers its client only after
this returns, so an accepted message is always on disk and in `outbound_queue`.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import asyncpg

from whymail.config import QueueConfig
from whymail.queue import store
from whymail.queue.spool import Spool


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
    delivery_id = delivery_id or uuid.uuid4()
    path = await spool.write(delivery_id, data, executor)
    try:
        async with pool.acquire() as conn:
            await store.enqueue(
                conn, delivery_id=delivery_id, user_id=user_id, sender=sender, recipients=recipients,
                message_path=path, size=len(data), max_attempts=queue.max_retries + 1,
                lifetime=queue.max_lifetime, priority=priority, envid=envid, ret=ret,
            )
    except BaseException:
        spool.remove([path])
        raise
    return delivery_id
