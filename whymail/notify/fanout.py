"""The HTTP gateway's side of live events: one long-poll to the hub for all of this gateway's users,
spread over their WebSocket subscriptions.

The gateway asks `wait_events(key, user_ids, after, timeout)` in a loop and hands each event to the
subscriptions of its user. A new user is announced at once with `watch(key, user_ids)`, so the poll
in flight includes them. When the hub says its feed has a gap (it restarted, or this gateway fell
behind), every subscription is told to resync.

The other direction: events the gateway itself creates (notifications stored by an API request, such
as `user_added` or a `system_alert`) go to the hub through `announce`, batched by an `EventPublisher`
and never awaited by the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from whymail.notify.eventlog import Catchup, FeedPage
from whymail.notify.events import LiveEvent
from whymail.notify.publisher import EventPublisher

log = logging.getLogger(__name__)

RESYNC = "resync"


class Subscription:
    """One socket's queue of events; `last_id` lets a catch-up and the live feed overlap safely."""

    def __init__(self, user_id: int, max_queue: int = 1000) -> None:
        self.user_id = user_id
        self.last_id = 0
        self._queue: asyncio.Queue[LiveEvent | str] = asyncio.Queue(maxsize=max_queue)

    def push(self, item: LiveEvent | str) -> None:
        """Queue an event (or RESYNC); a client too slow to keep up gets a resync instead."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    async def next(self) -> LiveEvent | str:
        """The next event not already sent (by id), or RESYNC."""
        while True:
            item = await self._queue.get()
            if isinstance(item, str):
                return item
            if item.id > self.last_id:
                self.last_id = item.id
                return item


class LiveFeed:
    """Subscriptions of one gateway and the poll loop that feeds them."""

    def __init__(
        self, key: str, *, wait_events: Callable[..., Awaitable[FeedPage]], watch: Callable[..., Awaitable[object]],
        events_since: Callable[[int, int], Awaitable[Catchup]], poll_timeout: float = 20.0,
    ) -> None:
        self.key = key
        self._wait_events = wait_events
        self._watch = watch
        self._events_since = events_since
        self._poll_timeout = poll_timeout
        self._subs: dict[int, set[Subscription]] = {}
        self._cursor: int | None = None
        self._task: asyncio.Task | None = None
        self._publisher: EventPublisher | None = None
        self._publisher_task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        for task in (self._task, self._publisher_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._publisher_task = None

    def publish_with(self, publisher: EventPublisher) -> None:
        """Send this gateway's own events through `publisher` (started here; call on the event loop)."""
        self._publisher = publisher
        if self._publisher_task is None:
            self._publisher_task = asyncio.get_running_loop().create_task(publisher.run())

    def announce(self, events: list[LiveEvent]) -> None:
        """Hand events this gateway created to the hub, for every gateway's sockets; never waits or fails
        (without a publisher they are only logged as lost)."""
        if self._publisher is not None:
            self._publisher.publish(events)
        elif events:
            log.warning("%d live events not announced: this gateway has no publisher", len(events))

    async def subscribe(self, user_id: int) -> Subscription:
        """A subscription for a new socket; the hub learns about a new user before this returns."""
        sub = Subscription(user_id)
        new_user = user_id not in self._subs
        self._subs.setdefault(user_id, set()).add(sub)
        if new_user:
            try:
                await self._watch(self.key, sorted(self._subs))
            except Exception as exc:  # the next poll carries the user set anyway
                log.warning("hub watch failed: %r", exc)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.user_id]

    async def catch_up(self, user_id: int, since: int) -> Catchup:
        """What the user missed after event `since` (resync when the hub cannot tell)."""
        return await self._events_since(user_id, since)

    @property
    def cursor(self) -> int | None:
        return self._cursor

    async def _poll_forever(self) -> None:
        while True:
            try:
                page = await self._wait_events(self.key, sorted(self._subs), self._cursor, self._poll_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live event poll failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            self.dispatch(page)

    def dispatch(self, page: FeedPage) -> None:
        """Hand a page from the hub to the subscriptions (a gap: everyone resyncs)."""
        if page.gap and self._cursor is not None:
            for subs in self._subs.values():
                for sub in subs:
                    sub.push(RESYNC)
        self._cursor = page.last_id
        for event in page.events:
            for sub in self._subs.get(event.user_id, ()):
                sub.push(event)
