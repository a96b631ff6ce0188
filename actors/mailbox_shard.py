"""MailboxShard: the single writer for the mailboxes of the users it owns (see DESIGN.md)."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import ray

from actors.notification_hub import HubSender
from whymail.db.pool import create_pool
from whymail.logs import setup_logging
from whymail.notify.events import LiveEvent
from whymail.notify.publisher import EventPublisher
from whymail.notify.store import folder_counts
from whymail.runtime import Runtime
from whymail.sharding import rendezvous_owner, shard_name
from whymail.store.delivery import MailStore
from whymail.store.mailbox_ops import MailboxOps
from whymail.store.models import DeliveryBatch, DeliveryReport
from whymail.store.notifier import ChangeNotifier

log = logging.getLogger("whymail.shard")


@ray.remote(max_restarts=-1, max_task_retries=0)
class MailboxShard:
    """Thin Ray shell around `MailStore`; Postgres is the truth, caches reload lazily after a restart."""

    def __init__(self, name: str, runtime: Runtime) -> None:
        setup_logging(runtime.config.logging, component=name)
        self._name = name
        self._runtime = runtime
        # fsync releases the GIL: ~20 threads is where parallel Maildir writes stop scaling (DESIGN.md).
        self._executor = ThreadPoolExecutor(max_workers=20, thread_name_prefix=f"{name}-io")
        self._store: MailStore | None = None
        self._ops: MailboxOps | None = None
        self._pool = None
        # Live events go to the NotificationHub in batches, fire-and-forget for the write path.
        self._events = EventPublisher(
            HubSender(self._runtime.config.ray.namespace), load_counts=self._folder_counts
        )
        self._flusher = asyncio.get_event_loop().create_task(self._events.run())
        self._starting = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> MailStore:
        db = self._runtime.config.db
        pool = self._pool = await create_pool(self._runtime.dsn, min_size=db.min_pool, max_size=db.max_pool)
        events = self._events
        notifier = ChangeNotifier(on_change=events.mailbox_changed)
        store = MailStore(
            pool,
            self._runtime.maildir_root,
            self._runtime.config.server.hostname,
            fsync=self._runtime.config.storage.fsync,
            executor=self._executor,
            notifier=notifier,
            events=events.publish,
        )
        self._ops = MailboxOps(
            pool,
            self._runtime.maildir_root,
            self._runtime.config.server.hostname,
            fsync=self._runtime.config.storage.fsync,
            executor=self._executor,
            notifier=notifier,
            on_user_changed=store.forget_user,
            events=events.publish,
        )
        self._store = store
        log.info("shard %s ready", self._name)
        return self._store

    async def _ready_store(self) -> MailStore:
        if self._store is not None:
            return self._store
        if self._starting.done() and self._starting.exception() is not None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        return await asyncio.shield(self._starting)

    async def _folder_counts(self, mailbox_ids: list[int]) -> list[LiveEvent]:
        if self._pool is None:
            return []
        async with self._pool.acquire() as conn:
            return await folder_counts(conn, mailbox_ids)

    async def ready(self) -> str:
        """Wait until the shard can serve; returns its name."""
        await self._ready_store()
        return self._name

    async def pid(self) -> int:
        """The worker process id (changes when Ray restarts the actor)."""
        return os.getpid()

    async def deliver_batch(self, batch: DeliveryBatch) -> DeliveryReport:
        """Store a batch of deliveries durably (idempotent by delivery id)."""
        store = await self._ready_store()
        return await store.deliver_batch(batch)

    async def forget_user(self, user_id: int) -> None:
        """Drop cached state of a user after a directory change."""
        store = await self._ready_store()
        store.forget_user(user_id)

    async def mailbox_op(self, operation: str, *args, **kwargs):
        """Run one IMAP write (store_flags, expunge, copy, move, append, create/delete/rename_mailbox,
        set_subscribed) or the IDLE long-poll `wait_changes`, for a user this shard owns."""
        await self._ready_store()
        if operation not in MAILBOX_OPERATIONS:
            raise ValueError(f"unknown mailbox operation {operation!r}")
        user_id = args[0] if args else kwargs.get("user_id")
        owners = [shard_name(i) for i in range(self._runtime.config.ray.shards)]
        if not isinstance(user_id, int) or rendezvous_owner(user_id, owners) != self._name:
            # One writer per mailbox: a caller with a stale shard map must not write here.
            raise ValueError(f"user {user_id!r} is not owned by {self._name}")
        return await getattr(self._ops, operation)(*args, **kwargs)


MAILBOX_OPERATIONS = frozenset(
    {
        "store_flags", "expunge", "copy", "move", "append", "create_mailbox", "delete_mailbox",
        "rename_mailbox", "set_subscribed", "wait_changes",
    }
)
