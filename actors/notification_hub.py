"""NotificationHub: numbers the shards' live events, keeps the recent ones per user, serves them to
the HTTP gateways (long-poll) and stores `new_email` notifications (see DESIGN.md)."""

from __future__ import annotations

import asyncio
import logging

import ray

from whymail.db.pool import create_pool
from whymail.logs import setup_logging
from whymail.notify import store
from whymail.notify.eventlog import Catchup, EventLog, FeedPage
from whymail.notify.events import LiveEvent
from whymail.notify.fanout import LiveFeed
from whymail.runtime import Runtime

log = logging.getLogger("whymail.notification_hub")

HUB_NAME = "notification-hub"


@ray.remote(max_restarts=-1, max_task_retries=0)
class NotificationHub:
    def __init__(self, runtime: Runtime) -> None:
        setup_logging(runtime.config.logging, component=HUB_NAME)
        self._runtime = runtime
        self._log = EventLog(per_user=1000)
        self._watching: dict[str, set[int]] = {}  # gateway key -> users with a socket there
        self._pool = None
        self._starting = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        db = self._runtime.config.db
        self._pool = await create_pool(self._runtime.dsn, min_size=1, max_size=max(2, db.min_pool))

    async def ready(self) -> str:
        await asyncio.shield(self._starting)
        return HUB_NAME

    async def publish(self, events: list[LiveEvent]) -> int:
        """Take a batch from a shard: number, keep and fan out; store the notifications it implies."""
        self._log.append(events)
        notes = store.new_email_notifications(events)
        if notes:
            try:
                await asyncio.shield(self._starting)
                async with self._pool.acquire() as conn:
                    stored = await store.insert_notifications(conn, notes)
                self._log.append([store.notification_event(n) for n in stored])
            except Exception as exc:
                log.error("%d notifications not stored: %r", len(notes), exc)
        return self._log.last_id

    async def watch(self, key: str, user_ids: list[int]) -> None:
        """A gateway's set of users changed: its poll in flight looks again."""
        self._watching[key] = set(user_ids)
        self._log.poke()

    async def wait_events(self, key: str, user_ids: list[int], after_id: int | None, timeout: float) -> FeedPage:
        """Long-poll of a gateway: its users' events after `after_id`, waiting up to `timeout` s."""
        self._watching[key] = set(user_ids)
        return await self._log.wait_feed(lambda: self._watching.get(key, set()), after_id, min(timeout, 60.0))

    async def events_since(self, user_id: int, after_id: int) -> Catchup:
        """What a reconnecting client of `user_id` missed after `after_id` (or resync)."""
        return self._log.since(user_id, after_id)

    async def last_id(self) -> int:
        return self._log.last_id


class HubSender:
    """`send(batch)` for an `EventPublisher`: publishes to the hub, looked up lazily and, while there is
    none, at most every 5 s (a publisher never waits on a missing hub: it drops and logs)."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._handle = None
        self._retry_at = 0.0

    async def __call__(self, batch: list[LiveEvent]) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise RuntimeError("no notification hub")
            try:
                self._handle = ray.get_actor(HUB_NAME, namespace=self._namespace)
            except ValueError:
                self._retry_at = loop.time() + 5.0
                raise
        await self._handle.publish.remote(batch)


def live_feed_for(namespace: str, key: str) -> LiveFeed:
    """A started `LiveFeed` for an HTTP gateway (`key` names it to the hub); call on its event loop.
    The hub handle is looked up lazily, so a gateway starts even before the hub answers."""
    handle = None

    def hub():
        nonlocal handle
        if handle is None:
            handle = ray.get_actor(HUB_NAME, namespace=namespace)
        return handle

    async def wait_events(key: str, user_ids: list[int], after_id: int | None, timeout: float) -> FeedPage:
        return await asyncio.wait_for(hub().wait_events.remote(key, user_ids, after_id, timeout), timeout + 10)

    async def watch(key: str, user_ids: list[int]) -> None:
        await asyncio.wait_for(hub().watch.remote(key, user_ids), 5.0)

    async def events_since(user_id: int, after_id: int) -> Catchup:
        return await asyncio.wait_for(hub().events_since.remote(user_id, after_id), 5.0)

    feed = LiveFeed(key, wait_events=wait_events, watch=watch, events_since=events_since)
    feed.start()
    return feed
