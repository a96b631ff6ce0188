"""Per-user cache of the `GET /mailboxes` answer in one HTTP gateway, kept correct by live events.

A cached answer is dropped when
- the NotificationHub reports any event of the user (`new_message`, `message_updated`,
  `folder_count`, a notification) or a resync (the gateway's feed had a gap): the gateway subscribes
  to the user's events *before* its first database read, so a change committed after a read always
  produces an event that arrives after it;
- a mailbox write of the user goes through this gateway (`wrap_writes`), so a client reads its own
  writes at once, before the shard's event comes back;
- it is older than `ttl` seconds: the safety net for what sends no event (a mailbox created or
  renamed over IMAP, a hub that is away).

A read that started before an invalidation never stores its (possibly older) answer: every
invalidation bumps the user's generation, and `put` only stores under the generation seen before the
read. Without a live feed nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CACHE_TTL = 2.0  # seconds; the upper bound of staleness for changes that announce no event
MAX_USERS = 10_000  # watched users per gateway; the least recently used half goes beyond it


@dataclass(slots=True)
class _Watched:
    """A user whose events this gateway follows, and their cached answer (if any)."""

    ready: asyncio.Event
    subscription: Any = None  # whymail.notify.fanout.Subscription, once subscribed
    task: asyncio.Task | None = None
    generation: int = 0
    body: bytes | None = None
    expires: float = 0.0
    used: float = 0.0


class MailboxListCache:
    """The JSON of each user's mailbox list, valid until one of the user's events arrives."""

    def __init__(
        self, feed, *, ttl: float = CACHE_TTL, max_users: int = MAX_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed  # whymail.notify.fanout.LiveFeed or None (then nothing is cached)
        self._ttl = ttl
        self._max_users = max_users
        self._clock = clock
        self._users: dict[int, _Watched] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    @property
    def enabled(self) -> bool:
        return self._feed is not None and self._ttl > 0

    def get(self, user_id: int) -> bytes | None:
        """The cached answer of the user, or None."""
        watched = self._users.get(user_id)
        now = self._clock()
        if watched is None or watched.body is None or watched.expires <= now:
            self.misses += 1
            return None
        watched.used = now
        self.hits += 1
        return watched.body

    async def generation(self, user_id: int) -> int | None:
        """Call before reading the database: the user's events are followed from now on; pass the
        result to `put`. None when nothing may be cached."""
        if not self.enabled:
            return None
        watched = self._users.get(user_id)
        if watched is None:
            if len(self._users) >= self._max_users:
                self._evict()
            watched = self._users[user_id] = _Watched(asyncio.Event(), used=self._clock())
            watched.task = asyncio.get_running_loop().create_task(self._follow(user_id, watched))
        if not watched.ready.is_set():
            await watched.ready.wait()  # the hub knows the user once subscribe() returned
        return watched.generation if watched.subscription is not None else None

    def put(self, user_id: int, generation: int | None, body: bytes) -> None:
        """Store an answer read after `generation(user_id)` returned `generation`, unless an
        invalidation came in between."""
        watched = self._users.get(user_id)
        if generation is None or watched is None or watched.generation != generation:
            return
        watched.body = body
        watched.expires = self._clock() + self._ttl

    def invalidate(self, user_id: int) -> None:
        watched = self._users.get(user_id)
        if watched is not None:
            watched.generation += 1
            watched.body = None
            self.invalidations += 1

    def wrap_writes(self, mailbox_op: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """`mailbox_op(operation, user_id, ...)` that also drops the user's answer, before the write (a
        read in flight cannot store) and after it (the write is visible to the next read)."""

        async def invalidating(operation: str, user_id: int, *args, **kwargs):
            self.invalidate(user_id)
            try:
                return await mailbox_op(operation, user_id, *args, **kwargs)
            finally:
                self.invalidate(user_id)

        return invalidating

    async def _follow(self, user_id: int, watched: _Watched) -> None:
        """Subscribe to the user's live events and drop the answer on each one, until evicted."""
        try:
            watched.subscription = await self._feed.subscribe(user_id)
        except Exception as exc:
            log.warning("mailbox cache: no live events for user %d (%r); not cached", user_id, exc)
            if self._users.get(user_id) is watched:
                del self._users[user_id]
            return
        finally:
            watched.ready.set()
        try:
            while True:
                await watched.subscription.next()  # an event or a resync: either way, read again
                self.invalidate(user_id)
        finally:
            self._feed.unsubscribe(watched.subscription)

    def _evict(self) -> None:
        """Forget the least recently used half of the users (their subscriptions end)."""
        by_use = sorted(self._users.items(), key=lambda item: item[1].used)
        for user_id, watched in by_use[: max(1, len(by_use) // 2)]:
            del self._users[user_id]
            if watched.task is not None:
                watched.task.cancel()

    async def close(self) -> None:
        tasks = [w.task for w in self._users.values() if w.task is not None]
        self._users.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {"users": len(self._users), "hits": self.hits, "misses": self.misses,
                "invalidations": self.invalidations}
