"""The fast read paths of the API: a message page written straight from rows is the JSON pydantic would
write, and the mailbox-list cache never keeps an answer older than the last event or write."""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson

from whymail.api.mailbox_cache import MailboxListCache
from whymail.api.models_mail import MessagePage
from whymail.api.routes.mail import _summary, page_json
from whymail.notify.fanout import RESYNC, Subscription

UTC = dt.UTC


def _row(i: int, flags: list[str], sent: dt.datetime | None, preview: str | None) -> dict:
    return {
        "id": i, "mailbox_id": 7, "uid": 100 + i, "flags": flags, "subject": f"Grüße {i} \"quoted\"",
        "from_addr": "Ann <ann@example.org>", "to_addrs": "bob@example.org", "cc_addrs": "",
        "size": 2048 + i, "internal_date": dt.datetime(2026, 1, 2, 3, 4, 5, 120 * i, tzinfo=UTC),
        "sent_date": sent, "message_id": f"<{i}@example.org>" if i % 2 else None,
        "has_attachments": bool(i % 3), "preview": preview,
    }


def test_page_json_is_what_pydantic_writes_for_the_same_rows():
    rows = [
        _row(0, [], None, None),
        _row(1, ["\\Seen", "\\Flagged", "zeta", "$Junk"], dt.datetime(2025, 12, 31, 23, 0, tzinfo=UTC), "  hi \n"),
        _row(2, ["\\Answered", "\\Draft"], dt.datetime(2025, 6, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
             "x" * 200),
    ]
    for cursor in (None, "abc"):
        expected = MessagePage(messages=[_summary(r) for r in rows], next_cursor=cursor).model_dump(mode="json")
        assert page_json(rows, cursor) == orjson.dumps(expected)


class FakeFeed:
    """The part of whymail.notify.fanout.LiveFeed the cache uses."""

    def __init__(self) -> None:
        self.subs: dict[int, set[Subscription]] = {}

    async def subscribe(self, user_id: int) -> Subscription:
        sub = Subscription(user_id)
        self.subs.setdefault(user_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subs.get(sub.user_id, set()).discard(sub)

    def push(self, user_id: int, item) -> None:
        for sub in self.subs.get(user_id, ()):
            sub.push(item)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _event(user_id: int, event_id: int):
    from whymail.notify.events import LiveEvent

    return LiveEvent(user_id=user_id, type="folder_count", id=event_id)


def test_cache_answers_until_an_event_a_resync_a_write_or_the_ttl():
    async def scenario():
        feed, clock = FakeFeed(), Clock()
        cache = MailboxListCache(feed, ttl=2.0, clock=clock)
        assert cache.get(1) is None
        generation = await cache.generation(1)
        assert feed.subs[1]  # followed before the first read
        cache.put(1, generation, b"v1")
        assert cache.get(1) == b"v1" and cache.get(2) is None

        feed.push(1, _event(1, 5))
        await asyncio.sleep(0)
        assert cache.get(1) is None
        cache.put(1, await cache.generation(1), b"v2")
        feed.push(1, RESYNC)
        await asyncio.sleep(0)
        assert cache.get(1) is None

        cache.put(1, await cache.generation(1), b"v3")
        clock.now += 2.5
        assert cache.get(1) is None

        calls = []

        async def mailbox_op(operation, user_id, *args):
            calls.append((operation, user_id, args))
            return "done"

        cache.put(1, await cache.generation(1), b"v4")
        assert await cache.wrap_writes(mailbox_op)("store", 1, "x") == "done"
        assert calls == [("store", 1, ("x",))] and cache.get(1) is None
        await cache.close()
        assert not feed.subs[1]

    asyncio.run(scenario())


def test_a_read_that_an_event_overtook_is_not_stored():
    async def scenario():
        feed = FakeFeed()
        cache = MailboxListCache(feed)
        generation = await cache.generation(1)
        feed.push(1, _event(1, 9))  # a change lands while the read is in flight
        await asyncio.sleep(0)
        cache.put(1, generation, b"old")
        assert cache.get(1) is None
        await cache.close()

    asyncio.run(scenario())


def test_without_a_live_feed_nothing_is_cached():
    async def scenario():
        cache = MailboxListCache(None)
        cache.put(1, await cache.generation(1), b"v")
        assert not cache.enabled and cache.get(1) is None

    asyncio.run(scenario())
