"""MemoryStorage, the reference model behind the session tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from whymail.imap.memory import MemoryAuthenticator, MemoryStorage
from whymail.imap.storage import Account, StorageError, StoreMode

ALICE = Account(1, "alice@example.com")
BOB = Account(2, "bob@example.com")


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


async def test_default_mailboxes_with_special_use(storage):
    boxes = {b.name: b.special_use for b in await storage.list_mailboxes(ALICE)}
    assert boxes == {
        "INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Archive": "\\Archive", "Trash": "\\Trash",
        "Junk": "\\Junk", "Starred": "\\Flagged",
    }


async def test_accounts_are_isolated(storage):
    await storage.append(ALICE, "INBOX", b"Subject: a\r\n\r\nx", frozenset(), None)
    assert (await storage.get_mailbox(BOB, "INBOX")).messages == 0


async def test_uids_ascend_and_modseq_grows(storage):
    inbox = await storage.get_mailbox(ALICE, "INBOX")
    first = await storage.append(ALICE, "INBOX", b"a", frozenset(), None)
    second = await storage.append(ALICE, "INBOX", b"b", frozenset({"\\Seen"}), None)
    assert (first.uid, second.uid) == (1, 2) and first.uidvalidity == inbox.uidvalidity
    before = (await storage.get_mailbox(ALICE, "INBOX")).highestmodseq
    result = await storage.store_flags(ALICE, inbox.id, [1, 2], StoreMode.ADD, frozenset({"\\Seen"}))
    assert [m.uid for m in result.changed] == [1]  # message 2 already had \Seen
    after = await storage.get_mailbox(ALICE, "INBOX")
    assert after.highestmodseq > before and after.unseen == 0


async def test_changes_since_reports_added_updated_expunged(storage):
    inbox = await storage.get_mailbox(ALICE, "INBOX")
    await storage.append(ALICE, "INBOX", b"a", frozenset(), None)
    mark = (await storage.get_mailbox(ALICE, "INBOX")).highestmodseq
    await storage.append(ALICE, "INBOX", b"b", frozenset(), None)
    await storage.store_flags(ALICE, inbox.id, [1], StoreMode.ADD, frozenset({"\\Deleted"}))
    changes = await storage.changes_since(ALICE, inbox.id, mark)
    assert [m.uid for m in changes.added] == [2] and [m.uid for m in changes.updated] == [1]
    assert await storage.expunge(ALICE, inbox.id) == [1]
    changes = await storage.changes_since(ALICE, inbox.id, mark)
    assert changes.expunged == (1,) and changes.uidnext == 3


async def test_unchanged_since_refuses_newer_messages(storage):
    inbox = await storage.get_mailbox(ALICE, "INBOX")
    await storage.append(ALICE, "INBOX", b"a", frozenset(), None)
    result = await storage.store_flags(ALICE, inbox.id, [1], StoreMode.REPLACE, frozenset({"x"}), unchanged_since=0)
    assert result.modified == (1,) and result.changed == ()


async def test_copy_move_and_trycreate(storage):
    inbox = await storage.get_mailbox(ALICE, "INBOX")
    for data in (b"a", b"b", b"c"):
        await storage.append(ALICE, "INBOX", data, frozenset(), datetime(2024, 1, 1, tzinfo=UTC))
    copied = await storage.copy(ALICE, inbox.id, [3, 1], "Archive")
    assert copied.source_uids == (1, 3) and copied.dest_uids == (1, 2)
    moved = await storage.move(ALICE, inbox.id, [2], "Trash")
    assert moved.dest_uids == (1,)
    assert [m.uid for m in await storage.list_messages(ALICE, inbox.id)] == [1, 3]
    with pytest.raises(StorageError) as err:
        await storage.copy(ALICE, inbox.id, [1], "Nope")
    assert err.value.code == "TRYCREATE"


async def test_rename_inbox_moves_messages(storage):
    await storage.append(ALICE, "INBOX", b"a", frozenset(), None)
    await storage.rename_mailbox(ALICE, "INBOX", "Old")
    assert (await storage.get_mailbox(ALICE, "INBOX")).messages == 0
    assert (await storage.get_mailbox(ALICE, "Old")).messages == 1


async def test_delete_keeps_children_and_refuses_inbox(storage):
    await storage.create_mailbox(ALICE, "a/b")
    await storage.delete_mailbox(ALICE, "a")
    names = {b.name for b in await storage.list_mailboxes(ALICE)}
    assert "a/b" in names and "a" not in names
    with pytest.raises(StorageError):
        await storage.delete_mailbox(ALICE, "INBOX")
    with pytest.raises(StorageError) as err:
        await storage.create_mailbox(ALICE, "bad//name")
    assert err.value.code == "CANNOT"


async def test_wait_changes_wakes_on_append(storage):
    inbox = await storage.get_mailbox(ALICE, "INBOX")
    waiter = asyncio.create_task(storage.wait_changes(ALICE, inbox.id, inbox.highestmodseq, 5))
    await asyncio.sleep(0)
    await storage.append(ALICE, "INBOX", b"a", frozenset(), None)
    assert await asyncio.wait_for(waiter, 5) is True
    current = (await storage.get_mailbox(ALICE, "INBOX")).highestmodseq
    assert await storage.wait_changes(ALICE, inbox.id, current, 0.01) is False


async def test_starred_lists_flagged_messages(storage):
    inbox = await storage.get_mailbox(ALICE, "INBOX")
    await storage.append(ALICE, "INBOX", b"a", frozenset({"\\Flagged"}), None)
    await storage.append(ALICE, "Sent", b"b", frozenset({"\\Flagged", "\\Seen"}), None)
    starred = await storage.get_mailbox(ALICE, "Starred")
    metas = await storage.list_messages(ALICE, starred.id)
    assert [m.uid for m in metas] == [1, 2] and starred.unseen == 1
    assert await storage.read_message(ALICE, starred.id, 2) == b"b"
    await storage.store_flags(ALICE, inbox.id, [1], StoreMode.REMOVE, frozenset({"\\Flagged"}))
    changes = await storage.changes_since(ALICE, starred.id, starred.highestmodseq)
    assert changes.expunged == (1,)
    with pytest.raises(StorageError):
        await storage.append(ALICE, "Starred", b"c", frozenset(), None)


async def test_authenticator():
    auth = MemoryAuthenticator({"Alice@example.com": "pw"})
    assert await auth.authenticate("alice@example.com", "pw", remote_ip="::1") == Account(1, "Alice@example.com")
    assert await auth.authenticate("alice@example.com", "bad", remote_ip="::1") is None
