"""The live event core: the hub's event log, the shard's batching publisher, the gateway fan-out."""

from __future__ import annotations

import asyncio

from whymail.notify import events
from whymail.notify.eventlog import EventLog
from whymail.notify.fanout import RESYNC, LiveFeed
from whymail.notify.publisher import EventPublisher
from whymail.notify.store import new_email_notifications


def _msg(user_id: int, uid: int, source: str = "delivery") -> events.LiveEvent:
    return events.new_message(user_id, 10 * user_id, "INBOX", uid, message_id=f"<{uid}@x>", subject=f"s{uid}",
                              from_addr="a@example.org", source=source)


def test_ids_increase_and_catch_up_returns_only_that_users_later_events():
    log = EventLog(first_id=100)
    numbered = log.append([_msg(1, 1), _msg(2, 1), _msg(1, 2)])
    assert [e.id for e in numbered] == [100, 101, 102] and log.last_id == 102
    missed = log.since(1, 100)
    assert not missed.resync and [e.data["uid"] for e in missed.events] == [2]
    assert log.since(2, 102).events == [] and not log.since(2, 102).resync


def test_catch_up_resyncs_when_events_were_dropped_or_predate_the_hub():
    log = EventLog(per_user=3, first_id=1000)
    log.append([_msg(1, uid) for uid in range(5)])  # ids 1000..1004, the ring keeps 1002..1004
    assert log.since(1, 1001).resync is False  # 1002.. are all still there
    assert log.since(1, 1000).resync is True  # 1001 was dropped
    assert log.since(1, 5).resync is True  # an id from an older hub instance
    assert log.since(1, 99999).resync is True  # an id this hub never gave out
    assert log.since(2, 999).resync is False  # nothing of user 2 was ever dropped


def test_feed_filters_by_user_and_reports_a_gap_for_a_stale_cursor():
    log = EventLog(feed_size=4, first_id=1)
    start = log.feed({1}, None)
    assert start.events == [] and start.last_id == 0
    log.append([_msg(1, 1), _msg(2, 1), _msg(1, 2)])
    page = log.feed({1}, start.last_id)
    assert [e.id for e in page.events] == [1, 3] and page.last_id == 3 and not page.gap
    log.append([_msg(2, uid) for uid in range(2, 6)])  # the feed now holds 4..7 only
    assert log.feed({1}, 3).gap is False
    assert log.feed({1}, 2).gap is True


async def test_wait_feed_wakes_on_an_event_and_on_a_new_watched_user():
    log = EventLog(first_id=1)
    watched = {1}
    waiter = asyncio.create_task(log.wait_feed(lambda: watched, 0, 5.0))
    await asyncio.sleep(0)
    log.append([_msg(2, 1)])  # not watched: the waiter keeps waiting
    await asyncio.sleep(0.01)
    assert not waiter.done()
    watched.add(2)
    log.poke()
    page = await asyncio.wait_for(waiter, 1.0)
    assert [e.user_id for e in page.events] == [2]
    empty = await log.wait_feed(lambda: {1}, log.last_id, 0.05)
    assert empty.events == [] and empty.last_id == log.last_id


async def test_publisher_batches_many_events_into_few_sends_and_coalesces_folder_counts():
    sent: list[list[events.LiveEvent]] = []
    counted: list[list[int]] = []

    async def send(batch):
        sent.append(batch)

    async def load_counts(ids):
        counted.append(ids)
        return [events.folder_count(1, i, "INBOX", 5, 1) for i in ids]

    publisher = EventPublisher(send, load_counts=load_counts, interval=0.02, max_batch=100)
    runner = asyncio.create_task(publisher.run())
    for uid in range(250):
        publisher.publish([_msg(1, uid)])
        publisher.mailbox_changed(7)
    for _ in range(200):
        if publisher.sent == 251:
            break
        await asyncio.sleep(0.01)
    runner.cancel()
    assert publisher.sent == 251 and len(sent) <= 5  # 250 messages + one folder count, not 251 calls
    assert counted == [[7]]
    assert [e.data["uid"] for b in sent for e in b if e.type == events.NEW_MESSAGE] == list(range(250))


async def test_a_hub_that_hangs_or_fails_never_blocks_publish_and_drops_the_oldest():
    release = asyncio.Event()

    async def hanging_send(batch):
        await release.wait()

    publisher = EventPublisher(hanging_send, interval=0.0, max_pending=10, send_timeout=0.05)
    runner = asyncio.create_task(publisher.run())
    publisher.publish([_msg(1, 0)])
    await asyncio.sleep(0.01)  # the first batch is now stuck in the send
    for uid in range(1, 30):
        publisher.publish([_msg(1, uid)])  # returns at once although the hub does not answer
    for _ in range(100):
        if publisher.idle and publisher.dropped >= 20:
            break
        await asyncio.sleep(0.01)
    runner.cancel()
    assert publisher.dropped >= 20  # 19 over the cap, then the timed-out batches


async def test_two_gateways_each_get_only_their_users_events():
    hub = EventLog(first_id=1)
    watching: dict[str, set[int]] = {}

    async def wait_events(key, user_ids, after, timeout):
        watching[key] = set(user_ids)
        return await hub.wait_feed(lambda: watching.get(key, set()), after, timeout)

    async def watch(key, user_ids):
        watching[key] = set(user_ids)
        hub.poke()

    async def events_since(user_id, after):
        return hub.since(user_id, after)

    feeds = [LiveFeed(f"gw{i}", wait_events=wait_events, watch=watch, events_since=events_since, poll_timeout=1.0)
             for i in range(2)]
    for feed in feeds:
        feed.start()
    while any(feed.cursor is None for feed in feeds):
        await asyncio.sleep(0.01)
    alice = await feeds[0].subscribe(1)
    bob = await feeds[1].subscribe(2)
    hub.append([_msg(1, 1), _msg(2, 1), _msg(1, 2)])
    got_alice = [await asyncio.wait_for(alice.next(), 1.0) for _ in range(2)]
    got_bob = await asyncio.wait_for(bob.next(), 1.0)
    assert [(e.user_id, e.data["uid"]) for e in got_alice] == [(1, 1), (1, 2)]
    assert (got_bob.user_id, got_bob.data["uid"]) == (2, 1)
    assert alice._queue.empty() and bob._queue.empty()
    for feed in feeds:
        await feed.stop()


async def test_a_gap_tells_every_subscription_to_resync_and_duplicates_are_skipped():
    async def no_watch(key, user_ids):
        return None

    feed = LiveFeed("gw", wait_events=None, watch=no_watch, events_since=None)  # type: ignore[arg-type]
    sub = await feed.subscribe(1)
    log = EventLog(first_id=1)
    first = log.append([_msg(1, 1)])
    feed.dispatch(log.feed({1}, None))
    feed.dispatch(log.feed({1}, 0))
    feed.dispatch(log.feed({1}, 0))  # the same event twice (a catch-up overlapping the feed)
    feed.dispatch(type(log.feed({1}, 0))(events=[], last_id=5, gap=True))
    assert [await sub.next(), await asyncio.wait_for(sub.next(), 0.1)] == [first[0], RESYNC]


def test_only_delivered_mail_becomes_a_new_email_notification():
    notes = new_email_notifications([_msg(1, 1), _msg(1, 2, source="append"), events.expunged(1, 10, [1])])
    assert len(notes) == 1
    assert notes[0].type == "new_email" and notes[0].body == "s1" and "a@example.org" in notes[0].title
    assert notes[0].data["uid"] == 1
