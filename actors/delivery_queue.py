"""DeliveryQueue: a Ray shell around `whymail.queue.engine.QueueEngine` (see DESIGN.md).

Several may run: they share `outbound_queue` through `FOR UPDATE SKIP LOCKED` claims. A restarted
actor (same name) first puts back the rows its previous life had claimed; rows of an actor that
never comes back are released after `queue.claim_timeout`. It wakes on `NOTIFY whymail_queue`
(sent in the enqueuing transaction), and otherwise sleeps until the next row is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import ray

from actors.notification_hub import HubSender
from whymail.db.pool import create_pool
from whymail.directory.cache import DirectoryCache
from whymail.dnsresolve import DnsResolver
from whymail.logs import setup_logging
from whymail.notify.publisher import EventPublisher
from whymail.notify.writer import NotificationWriter
from whymail.outbound.client import deliver as deliver_remote
from whymail.outbound.dsn import build_dsn
from whymail.queue import store
from whymail.queue.engine import QueueEngine
from whymail.queue.spool import Spool
from whymail.runtime import Runtime
from whymail.store.router import ShardRouter

log = logging.getLogger("whymail.queue.actor")

MAX_ROUNDS_IN_FLIGHT = 4
HOUSEKEEPING_EVERY = 60.0
# After a wake-up, let submissions that arrive within this time join the round: under load, one NOTIFY
# per message would otherwise make rounds of one or two messages, each with its own SMTP connection.
GATHER_DELAY = 0.02


@ray.remote(max_restarts=-1, max_task_retries=0)
class DeliveryQueue:
    def __init__(self, name: str, runtime: Runtime, shard_names: list[str], namespace: str) -> None:
        setup_logging(runtime.config.logging, component=name)
        self._name = name
        self._runtime = runtime
        self._shard_names = list(shard_names)
        self._namespace = namespace
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"{name}-io")
        self._wake = asyncio.Event()
        self._engine: QueueEngine | None = None
        self._listener = None
        self._loop_task: asyncio.Task | None = None
        self._housekeeping_task: asyncio.Task | None = None
        # Notifications of queue outcomes: stored in batches, then sent to the hub in batches.
        self._events = EventPublisher(HubSender(self._namespace))
        self._notes_tasks: list[asyncio.Task] = []
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        config = self._runtime.config
        # PostgreSQL may be away while Ray (re)starts us: keep trying, the rows wait in the table.
        while True:
            try:
                pool = await create_pool(self._runtime.dsn, min_size=1, max_size=config.db.max_pool)
                break
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s: database unreachable (%r); retrying in 2 s", self._name, exc)
                await asyncio.sleep(2.0)
        directory = DirectoryCache(self._runtime.dsn)
        await directory.start(wait=False)
        handles = {name: ray.get_actor(name, namespace=self._namespace) for name in self._shard_names}
        router = ShardRouter(
            self._shard_names,
            lambda name: (lambda batch, h=handles[name]: h.deliver_batch.remote(batch)),
            first_attempt=1,  # a restarted queue may resend: the shards check for duplicates
        )
        resolver = DnsResolver.from_config(config.dns)
        relay = config.relay
        helo = relay.helo_name or config.server.hostname

        async def send_remote(domain, messages, on_message):
            return await deliver_remote(
                domain, messages, resolver=resolver, relay=relay, helo=helo, timeout=relay.timeout,
                on_message=on_message,
            )

        notifications = NotificationWriter(pool, announce=self._events.publish)
        loop = asyncio.get_running_loop()
        self._notes_tasks = [loop.create_task(self._events.run()), loop.create_task(notifications.run())]
        self._engine = QueueEngine(
            worker=self._name, pool=pool, spool=Spool(self._runtime.maildir_root, fsync=config.storage.fsync),
            config=config, directory=directory, local_deliver=router.deliver, send_remote=send_remote,
            build_dsn=build_dsn, executor=self._executor, notifications=notifications,
        )
        self._directory = directory
        released = await self._engine.release_own_claims()
        if released:
            log.warning("%s: took back %d queue entries claimed before a restart", self._name, released)
        self._listener = await pool.acquire()
        await self._listener.add_listener(store.QUEUE_CHANNEL, lambda *_args: self._wake.set())
        # Not before the directory is loaded: our own domains must never go out to the world.
        while directory.current is None:
            with contextlib.suppress(TimeoutError):
                await directory.wait_for_version(1, timeout=10.0)
        self._loop_task = loop.create_task(self._loop())
        self._housekeeping_task = loop.create_task(self._housekeeping())
        log.info("%s ready", self._name)

    async def _housekeeping(self) -> None:
        """Every minute, apart from the rounds (which may take long): renew our claims, release those of
        vanished workers, remove finished rows and their spool files."""
        assert self._engine is not None
        while True:
            try:
                released, removed = await self._engine.housekeeping()
                if released or removed:
                    log.info("queue housekeeping: %d stale claims released, %d spool files removed",
                             released, removed)
            except Exception as exc:
                log.warning("queue housekeeping failed: %r", exc)
            await asyncio.sleep(HOUSEKEEPING_EVERY)

    async def _loop(self) -> None:
        engine = self._engine
        assert engine is not None
        rounds: set[asyncio.Task] = set()
        poll = self._runtime.config.queue.poll_interval
        while True:
            try:
                if len(rounds) >= MAX_ROUNDS_IN_FLIGHT:
                    await asyncio.wait(rounds, return_when=asyncio.FIRST_COMPLETED)
                    continue
                self._wake.clear()
                entries = await engine.claim_batch()
                if entries:
                    task = asyncio.create_task(engine.process(entries))
                    rounds.add(task)
                    task.add_done_callback(rounds.discard)
                    continue
                due = await engine.next_due_in()
                wait_for = poll if due is None else min(poll, max(due, 0.01))
                waiters = [asyncio.ensure_future(self._wake.wait()), *rounds]
                done, _ = await asyncio.wait(waiters, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED)
                if waiters[0] not in done:
                    waiters[0].cancel()
                else:
                    await asyncio.sleep(GATHER_DELAY)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL away: keep trying, the rows are safe in the table
                log.error("queue loop: %r; retrying", exc)
                await asyncio.sleep(1.0)

    async def ready(self) -> str:
        await asyncio.shield(self._started)
        await self._directory.wait_for_version(1, timeout=10.0)
        return self._name

    async def pid(self) -> int:
        return os.getpid()

    async def wake(self) -> None:
        self._wake.set()

    async def stats(self) -> dict:
        await asyncio.shield(self._started)
        assert self._engine is not None
        return dict(self._engine.stats)

    async def stop(self) -> None:
        for task in (self._loop_task, self._housekeeping_task, *self._notes_tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
