"""PgStorage and PgAuthenticator against the real PostgreSQL and Maildir.

Writes go through a real `MailboxOps` (the code the shard runs), reads through PgStorage, as the
IMAP gateway will do; deliveries come through the real `MailStore`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.test_mailbox_ops import PASSWORD, Env, body, fill, make_user
from whymail.db.pool import create_pool
from whymail.directory import service
from whymail.imap.pg_storage import PgAuthenticator, PgStorage, starred_id
from whymail.imap.storage import Account, StorageError, StoreMode
from whymail.store.delivery import MailStore
from whymail.store.mailbox_ops import MailboxOps
from whymail.store.models import DeliveryBatch, DeliveryItem, Recipient
from whymail.store.notifier import ChangeNotifier


@pytest.fixture
async def env(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Env]:
    pool = await create_pool(pg_dsn, min_size=1, max_size=6)
    executor = ThreadPoolExecutor(8)
    notifier = ChangeNotifier()
    root = tmp_path / "maildir"
    root.mkdir()
    ops = MailboxOps(pool, root, "mx.test", fsync=True, executor=executor, notifier=notifier)
    yield Env(pg_dsn, pool, root, notifier, ops, executor)
    await pool.close()
    executor.shutdown()


@pytest.fixture
def storage(env: Env) -> PgStorage:
    return PgStorage(env.pool, env.root, env.ops, env.ops, executor=env.executor)


async def account(env: Env, email: str, **kwargs) -> Account:
    return Account(user_id=await make_user(env, email, **kwargs), email=email)


async def test_list_mailboxes_has_the_defaults_and_the_virtual_starred(env: Env, storage: PgStorage, unique: str) -> None:
    me = await account(env, f"a@l{unique}.test")
    await fill(env, me.user_id, 2)
    listed = await storage.list_mailboxes(me)
    assert listed[0].name == "INBOX"
    boxes = {m.name: m for m in listed}
    assert set(boxes) == {"INBOX", "Sent", "Drafts", "Archive", "Trash", "Junk", "Starred"}
    assert boxes["INBOX"].messages == 2 and boxes["INBOX"].unseen == 2 and boxes["INBOX"].uidnext == 3
    assert boxes["Sent"].special_use == "\\Sent" and boxes["Starred"].special_use == "\\Flagged"
    assert (await storage.get_mailbox(me, "inbox")).id == boxes["INBOX"].id
    assert (await storage.get_mailbox(me, "Starred")).id == starred_id(me)
    assert await storage.list_messages(me, starred_id(me)) == []
    for name in ("Nope", "a//b"):
        with pytest.raises(StorageError) as caught:
            await storage.get_mailbox(me, name)
        assert caught.value.code == "NONEXISTENT"


async def test_list_and_read_messages_and_expunged_reads_as_nonexistent(
    env: Env, storage: PgStorage, unique: str
) -> None:
    me = await account(env, f"a@r{unique}.test")
    await fill(env, me.user_id, 3)
    inbox = await storage.get_mailbox(me, "INBOX")
    metas = await storage.list_messages(me, inbox.id)
    assert [m.uid for m in metas] == [1, 2, 3] and metas[0].size == len(body(0))
    assert await storage.read_message(me, inbox.id, 2) == body(1)
    await storage.store_flags(me, inbox.id, [2], StoreMode.ADD, frozenset({"\\Deleted"}))
    assert await storage.expunge(me, inbox.id) == [2]
    with pytest.raises(StorageError) as caught:
        await storage.read_message(me, inbox.id, 2)
    assert caught.value.code == "NONEXISTENT"


async def test_changes_since_reports_added_updated_and_expunged(env: Env, storage: PgStorage, unique: str) -> None:
    me = await account(env, f"a@c{unique}.test")
    await fill(env, me.user_id, 3)
    inbox = await storage.get_mailbox(me, "INBOX")
    since = inbox.highestmodseq
    nothing = await storage.changes_since(me, inbox.id, since)
    assert (nothing.added, nothing.updated, nothing.expunged) == ((), (), ())

    await storage.store_flags(me, inbox.id, [1, 2], StoreMode.ADD, frozenset({"\\Seen", "\\Deleted"}))
    await storage.store_flags(me, inbox.id, [2], StoreMode.REMOVE, frozenset({"\\Deleted"}))
    await storage.expunge(me, inbox.id)
    await fill(env, me.user_id, 2)
    changes = await storage.changes_since(me, inbox.id, since)
    now = await storage.get_mailbox(me, "INBOX")
    assert changes.highestmodseq == now.highestmodseq and changes.uidnext == 6
    assert [m.uid for m in changes.updated] == [2] and changes.updated[0].flags == frozenset({"\\Seen"})
    assert [m.uid for m in changes.added] == [4, 5]
    assert changes.expunged == (1,)
    later = await storage.changes_since(me, inbox.id, changes.added[0].modseq)
    assert [m.uid for m in later.added] == [5] and later.updated == () and later.expunged == ()


async def test_deliveries_through_mailstore_show_up_in_changes(env: Env, storage: PgStorage, unique: str) -> None:
    domain = f"dl{unique}.test"
    me = await account(env, f"a@{domain}")
    store = MailStore(env.pool, env.root, "mx.test", fsync=True, executor=env.executor)
    inbox = await storage.get_mailbox(me, "INBOX")
    item = DeliveryItem(
        delivery_id=uuid.uuid4(), body_index=0, recipient=Recipient(user_id=me.user_id, domain=domain, local_part="a"),
        internal_date=time.time(),
    )
    report = await store.deliver_batch(DeliveryBatch(bodies=[body(7)], items=[item]))
    assert report.outcomes[0].ok
    changes = await storage.changes_since(me, inbox.id, inbox.highestmodseq)
    assert [m.uid for m in changes.added] == [1]
    assert await storage.read_message(me, inbox.id, 1) == body(7)
    copied = await storage.copy(me, inbox.id, [1], "Archive")
    archive = await storage.get_mailbox(me, "Archive")
    assert await storage.read_message(me, archive.id, copied.dest_uids[0]) == body(7)


async def test_wait_changes_wakes_within_a_second_of_a_store_from_another_task(
    env: Env, storage: PgStorage, unique: str
) -> None:
    me = await account(env, f"a@w{unique}.test")
    await fill(env, me.user_id, 1)
    inbox = await storage.get_mailbox(me, "INBOX")
    assert await storage.wait_changes(me, inbox.id, inbox.highestmodseq, 0.2) is False
    assert await storage.wait_changes(me, inbox.id, inbox.highestmodseq - 1, 5.0) is True

    async def flag_later() -> None:
        await asyncio.sleep(0.3)
        await storage.store_flags(me, inbox.id, [1], StoreMode.ADD, frozenset({"\\Flagged"}))

    started = time.monotonic()
    task = asyncio.create_task(flag_later())
    woke = await storage.wait_changes(me, inbox.id, inbox.highestmodseq, 10.0)
    elapsed = time.monotonic() - started
    await task
    assert woke is True and elapsed < 1.3


async def test_another_users_mailbox_id_is_nonexistent_for_reads_and_writes(
    env: Env, storage: PgStorage, unique: str
) -> None:
    owner = await account(env, f"owner@x{unique}.test")
    other = await account(env, f"other@x{unique}.test")
    await fill(env, owner.user_id, 1)
    victim = await storage.get_mailbox(owner, "INBOX")
    calls = (
        storage.list_messages(other, victim.id),
        storage.changes_since(other, victim.id, 0),
        storage.wait_changes(other, victim.id, 0, 0.1),
        storage.read_message(other, victim.id, 1),
        storage.store_flags(other, victim.id, [1], StoreMode.ADD, frozenset({"\\Seen"})),
        storage.expunge(other, victim.id),
        storage.copy(other, victim.id, [1], "INBOX"),
        storage.move(other, victim.id, [1], "INBOX"),
        storage.list_messages(other, starred_id(owner)),
    )
    for call in calls:
        with pytest.raises(StorageError) as caught:
            await call
        assert caught.value.code == "NONEXISTENT"
    assert await storage.read_message(owner, victim.id, 1) == body(0)


async def test_starred_is_read_only(env: Env, storage: PgStorage, unique: str) -> None:
    me = await account(env, f"a@v{unique}.test")
    inbox = await storage.get_mailbox(me, "INBOX")
    for call in (
        storage.append(me, "starred", body(1), frozenset(), None),
        storage.copy(me, inbox.id, [1], "Starred"),
        storage.expunge(me, starred_id(me)),
        storage.move(me, starred_id(me), [1], "INBOX"),
    ):
        with pytest.raises(StorageError) as caught:
            await call
        assert caught.value.code == "CANNOT"


async def test_authenticator_accepts_the_right_password_only_for_active_users(env: Env, unique: str) -> None:
    domain = f"au{unique}.test"
    me = await account(env, f"a@{domain}")
    await make_user(env, f"off@{domain}")
    async with env.pool.acquire() as conn:
        await service.set_enabled(conn, f"off@{domain}", False)
    auth = PgAuthenticator(env.pool, executor=env.executor)
    assert await auth.authenticate(f"A@{domain.upper()}", PASSWORD, remote_ip="127.0.0.1") == me
    assert await auth.authenticate(f"a@{domain}", PASSWORD + "x", remote_ip="127.0.0.1") is None
    assert await auth.authenticate(f"off@{domain}", PASSWORD, remote_ip="127.0.0.1") is None
    assert await auth.authenticate(f"nobody@{domain}", PASSWORD, remote_ip="127.0.0.1") is None
    assert await auth.authenticate("not an address", PASSWORD, remote_ip="127.0.0.1") is None


async def test_starred_shows_every_flagged_message_under_its_own_uids(env: Env, storage: PgStorage, unique: str) -> None:
    me = await account(env, f"a@st{unique}.test")
    other = await account(env, f"b@st{unique}.test")
    await fill(env, me.user_id, 3)
    await fill(env, me.user_id, 2, "Archive")
    await fill(env, other.user_id, 1)
    inbox = await storage.get_mailbox(me, "INBOX")
    archive = await storage.get_mailbox(me, "Archive")
    flagged = frozenset({"\\Flagged"})
    await storage.store_flags(other, (await storage.get_mailbox(other, "INBOX")).id, [1], StoreMode.ADD, flagged)
    start = await storage.get_mailbox(me, "Starred")
    assert (start.messages, start.uidvalidity, start.uidnext) == (0, 1, 1)

    await storage.store_flags(me, inbox.id, [2], StoreMode.ADD, flagged)
    await storage.store_flags(me, archive.id, [1], StoreMode.ADD, flagged)
    view = await storage.get_mailbox(me, "starred")
    assert (view.messages, view.unseen, view.uidnext) == (2, 2, 3)
    assert view.highestmodseq > start.highestmodseq
    listed = await storage.list_messages(me, starred_id(me))
    assert [m.uid for m in listed] == [1, 2]
    assert await storage.read_message(me, starred_id(me), 1) == body(1)
    assert await storage.read_message(me, starred_id(me), 2) == body(0)
    assert [m.uid for m in await storage.list_messages(other, starred_id(other))] == [1]

    changes = await storage.changes_since(me, starred_id(me), start.highestmodseq)
    assert [m.uid for m in changes.added] == [1, 2] and changes.expunged == ()

    # \\Seen on the real message updates the view's entry; unflagging it removes it.
    await storage.store_flags(me, archive.id, [1], StoreMode.ADD, frozenset({"\\Seen"}))
    changes = await storage.changes_since(me, starred_id(me), view.highestmodseq)
    assert [(m.uid, "\\Seen" in m.flags) for m in changes.updated] == [(2, True)] and changes.added == ()
    mid = changes.highestmodseq
    await storage.store_flags(me, inbox.id, [2], StoreMode.REMOVE, flagged)
    changes = await storage.changes_since(me, starred_id(me), mid)
    assert changes.expunged == (1,) and changes.updated == () and changes.added == ()
    assert changes.highestmodseq > mid
    with pytest.raises(StorageError):
        await storage.read_message(me, starred_id(me), 1)

    # Flagged again: a new virtual UID, never a reused one.
    await storage.store_flags(me, inbox.id, [2], StoreMode.ADD, flagged)
    assert [m.uid for m in await storage.list_messages(me, starred_id(me))] == [2, 3]

    # Expunged and moved messages leave the view too.
    await storage.store_flags(me, archive.id, [1], StoreMode.ADD, frozenset({"\\Deleted"}))
    mid = (await storage.get_mailbox(me, "Starred")).highestmodseq
    await storage.expunge(me, archive.id)
    assert (await storage.changes_since(me, starred_id(me), mid)).expunged == (2,)
    await storage.move(me, inbox.id, [2], "Trash")
    assert [m.uid for m in await storage.list_messages(me, starred_id(me))] == [4]
    assert await storage.read_message(me, starred_id(me), 4) == body(1)


async def test_store_through_starred_changes_the_real_message(env: Env, storage: PgStorage, unique: str) -> None:
    me = await account(env, f"a@ss{unique}.test")
    await fill(env, me.user_id, 2)
    await fill(env, me.user_id, 1, "Sent")
    inbox = await storage.get_mailbox(me, "INBOX")
    sent = await storage.get_mailbox(me, "Sent")
    flagged = frozenset({"\\Flagged"})
    await storage.store_flags(me, inbox.id, [1, 2], StoreMode.ADD, flagged)
    await storage.store_flags(me, sent.id, [1], StoreMode.ADD, flagged)
    star = starred_id(me)
    seen = await storage.store_flags(me, star, [1, 3, 99], StoreMode.ADD, frozenset({"\\Seen"}))
    assert [m.uid for m in seen.changed] == [1, 3] and seen.modified == ()
    assert all(m.flags == {"\\Flagged", "\\Seen"} for m in seen.changed)
    assert [m.flags for m in await storage.list_messages(me, sent.id)] == [{"\\Flagged", "\\Seen"}]
    assert [m.flags for m in await storage.list_messages(me, inbox.id)] == [{"\\Flagged", "\\Seen"}, {"\\Flagged"}]

    stale = seen.changed[0].modseq - 1
    refused = await storage.store_flags(me, star, [1, 2], StoreMode.ADD, frozenset({"$X"}), unchanged_since=stale)
    assert refused.modified == (1,) and [m.uid for m in refused.changed] == [2]

    before = (await storage.get_mailbox(me, "Starred")).highestmodseq
    gone = await storage.store_flags(me, star, [3], StoreMode.REMOVE, flagged)
    assert [(m.uid, m.flags) for m in gone.changed] == [(3, {"\\Seen"})]
    assert [m.flags for m in await storage.list_messages(me, sent.id)] == [{"\\Seen"}]
    assert [m.uid for m in await storage.list_messages(me, star)] == [1, 2]
    assert (await storage.changes_since(me, star, before)).expunged == (3,)


async def test_wait_changes_on_starred_wakes_on_a_change_in_any_mailbox(env: Env, storage: PgStorage, unique: str) -> None:
    me = await account(env, f"a@sw{unique}.test")
    await fill(env, me.user_id, 1, "Archive")
    archive = await storage.get_mailbox(me, "Archive")
    modseq = (await storage.get_mailbox(me, "Starred")).highestmodseq
    assert await storage.wait_changes(me, starred_id(me), modseq, 0.1) is False
    waiting = asyncio.create_task(storage.wait_changes(me, starred_id(me), modseq, 10))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await storage.store_flags(me, archive.id, [1], StoreMode.ADD, frozenset({"\\Flagged"}))
    assert await waiting is True
    assert time.monotonic() - started < 2
