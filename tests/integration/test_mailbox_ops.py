"""MailboxOps (the shard's IMAP write path) against the real PostgreSQL and a real Maildir, no Ray.

Each test makes its own domain and users. What is checked is what a client would see afterwards:
UIDs, MODSEQs, the expunge log, counters, quota, and that a row exists exactly when its file does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from whymail.auth.passwords import hash_password
from whymail.db.pool import create_pool
from whymail.directory import service
from whymail.imap.storage import StorageError, StoreMode
from whymail.store.mailbox_ops import MailboxOps
from whymail.store.notifier import ChangeNotifier

PASSWORD = "pw-correct-123"


@dataclass
class Env:
    dsn: str
    pool: asyncpg.Pool
    root: Path
    notifier: ChangeNotifier
    ops: MailboxOps
    executor: ThreadPoolExecutor

    async def fetch(self, query: str, *args) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def mailbox(self, user_id: int, name: str) -> asyncpg.Record:
        return await self.fetchrow("SELECT * FROM mailboxes WHERE user_id = $1 AND name = $2", user_id, name)

    async def messages(self, user_id: int, name: str) -> list[asyncpg.Record]:
        return await self.fetch(
            """SELECT m.* FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id
                WHERE mb.user_id = $1 AND mb.name = $2 ORDER BY m.uid""",
            user_id, name,
        )

    async def user(self, user_id: int) -> asyncpg.Record:
        return await self.fetchrow("SELECT * FROM users WHERE id = $1", user_id)

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")}


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


_HASHES: dict[str, str] = {}


async def make_user(env: Env, email: str, *, quota_bytes: int = 0) -> int:
    """A user (and its domain, if new) with the default mailboxes; returns its id."""
    if not _HASHES:
        _HASHES[PASSWORD] = hash_password(PASSWORD, rounds=4)
    domain = email.split("@")[1]
    async with env.pool.acquire() as conn:
        try:
            await service.add_domain(conn, domain)
        except service.AlreadyExists:
            pass
        info = await service.add_user(conn, email, _HASHES[PASSWORD], quota_bytes=quota_bytes)
    return info.id


def body(n: int, pad: int = 0) -> bytes:
    return f"Subject: message {n}\r\nMessage-ID: <m{n}@test>\r\n\r\nbody {n}\r\n{'x' * pad}".encode()


async def fill(env: Env, user_id: int, count: int, mailbox: str = "INBOX") -> list[int]:
    uids = []
    for n in range(count):
        result = await env.ops.append(user_id, mailbox, body(n), frozenset(), None)
        uids.append(result.uid)
    return uids


async def test_store_flags_bumps_highestmodseq_once_and_stamps_every_changed_row(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@f{unique}.test")
    await fill(env, user, 3)
    before = await env.mailbox(user, "INBOX")
    assert before["unseen_count"] == 3
    result = await env.ops.store_flags(user, before["id"], [1, 2], StoreMode.ADD, frozenset({"\\seen", "$Work"}))
    after = await env.mailbox(user, "INBOX")
    assert after["highestmodseq"] == before["highestmodseq"] + 1
    assert [m.uid for m in result.changed] == [1, 2] and result.modified == ()
    assert all(m.modseq == after["highestmodseq"] for m in result.changed)
    assert all(m.flags == frozenset({"\\Seen", "$Work"}) for m in result.changed)
    rows = await env.messages(user, "INBOX")
    assert [r["modseq"] for r in rows[:2]] == [after["highestmodseq"]] * 2
    assert rows[2]["modseq"] < after["highestmodseq"]
    assert after["unseen_count"] == 1

    again = await env.ops.store_flags(user, before["id"], [1, 2], StoreMode.ADD, frozenset({"\\Seen"}))
    assert again.changed == () and (await env.mailbox(user, "INBOX"))["highestmodseq"] == after["highestmodseq"]

    replaced = await env.ops.store_flags(user, before["id"], [1], StoreMode.REPLACE, frozenset({"\\Flagged"}))
    removed = await env.ops.store_flags(user, before["id"], [2], StoreMode.REMOVE, frozenset({"\\Seen"}))
    assert replaced.changed[0].flags == frozenset({"\\Flagged"})
    assert removed.changed[0].flags == frozenset({"$Work"})
    final = await env.mailbox(user, "INBOX")
    assert final["unseen_count"] == 3 and final["highestmodseq"] == after["highestmodseq"] + 2


async def test_unchanged_since_refuses_messages_modified_after_it(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@u{unique}.test")
    await fill(env, user, 2)
    inbox = await env.mailbox(user, "INBOX")
    base = inbox["highestmodseq"]
    await env.ops.store_flags(user, inbox["id"], [1], StoreMode.ADD, frozenset({"\\Answered"}))
    result = await env.ops.store_flags(
        user, inbox["id"], [1, 2], StoreMode.ADD, frozenset({"\\Seen"}), unchanged_since=base
    )
    assert result.modified == (1,)
    assert [m.uid for m in result.changed] == [2]
    rows = await env.messages(user, "INBOX")
    assert "\\Seen" not in rows[0]["flags"] and "\\Seen" in rows[1]["flags"]


async def test_expunge_logs_uids_with_new_modseq_and_removes_files_after_commit(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@e{unique}.test")
    await fill(env, user, 3)
    inbox = await env.mailbox(user, "INBOX")
    rows = await env.messages(user, "INBOX")
    paths = {r["uid"]: env.root / r["maildir_path"] for r in rows}
    assert all(p.is_file() for p in paths.values())
    await env.ops.store_flags(user, inbox["id"], [1, 3], StoreMode.ADD, frozenset({"\\Deleted"}))

    assert await env.ops.expunge(user, inbox["id"], [2]) == []  # UID EXPUNGE of a message not \Deleted
    assert await env.ops.expunge(user, inbox["id"]) == [1, 3]

    after = await env.mailbox(user, "INBOX")
    logged = await env.fetch("SELECT uid, modseq FROM expunged WHERE mailbox_id = $1 ORDER BY uid", inbox["id"])
    assert [(r["uid"], r["modseq"]) for r in logged] == [(1, after["highestmodseq"]), (3, after["highestmodseq"])]
    assert not paths[1].exists() and not paths[3].exists() and paths[2].is_file()
    assert after["message_count"] == 1 and after["total_size"] == rows[1]["size"] and after["unseen_count"] == 1
    owner = await env.user(user)
    assert owner["storage_used"] == rows[1]["size"] and owner["message_count"] == 1
    assert env.notifier.latest(inbox["id"]) == after["highestmodseq"]


async def test_copy_gives_new_uids_in_source_order_and_links_files(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@c{unique}.test")
    await fill(env, user, 3)
    inbox = await env.mailbox(user, "INBOX")
    await env.ops.store_flags(user, inbox["id"], [3], StoreMode.ADD, frozenset({"\\Flagged"}))
    archive = await env.mailbox(user, "Archive")
    result = await env.ops.copy(user, inbox["id"], [3, 1, 99], "Archive")
    assert result.uidvalidity == archive["uidvalidity"]
    assert result.source_uids == (1, 3) and result.dest_uids == (1, 2)

    copied = await env.messages(user, "Archive")
    originals = await env.messages(user, "INBOX")
    assert [r["uid"] for r in copied] == [1, 2] and len(originals) == 3
    assert list(copied[1]["flags"]) == ["\\Flagged"] and copied[0]["subject"] == "message 0"
    for row in copied:
        path = env.root / row["maildir_path"]
        assert path.is_file() and "/.Archive/new/" in f"/{row['maildir_path']}"
        assert path.stat().st_nlink == 2  # a hard link to the INBOX file
    assert (env.root / copied[0]["maildir_path"]).read_bytes() == body(0)
    owner = await env.user(user)
    assert owner["message_count"] == 5
    assert owner["storage_used"] == sum(r["size"] for r in originals) + copied[0]["size"] + copied[1]["size"]


async def test_move_copies_and_expunges_the_source_in_one_transaction(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@m{unique}.test")
    await fill(env, user, 3)
    inbox = await env.mailbox(user, "INBOX")
    source_paths = [env.root / r["maildir_path"] for r in await env.messages(user, "INBOX")]
    used = (await env.user(user))["storage_used"]

    result = await env.ops.move(user, inbox["id"], [2, 3], "Trash")
    assert result.source_uids == (2, 3) and result.dest_uids == (1, 2)
    assert [r["uid"] for r in await env.messages(user, "INBOX")] == [1]
    moved = await env.messages(user, "Trash")
    assert [r["uid"] for r in moved] == [1, 2]
    assert all((env.root / r["maildir_path"]).read_bytes() == body(n) for r, n in zip(moved, (1, 2), strict=True))
    assert source_paths[0].is_file() and not source_paths[1].exists() and not source_paths[2].exists()
    logged = await env.fetch("SELECT uid FROM expunged WHERE mailbox_id = $1 ORDER BY uid", inbox["id"])
    assert [r["uid"] for r in logged] == [2, 3]
    assert (await env.user(user))["storage_used"] == used
    assert (await env.mailbox(user, "INBOX"))["message_count"] == 1


async def test_copy_and_append_to_a_missing_mailbox_answer_trycreate(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@t{unique}.test")
    await fill(env, user, 1)
    inbox = await env.mailbox(user, "INBOX")
    for call in (
        env.ops.copy(user, inbox["id"], [1], "Nowhere"),
        env.ops.move(user, inbox["id"], [1], "Nowhere"),
        env.ops.append(user, "Nowhere", body(1), frozenset(), None),
    ):
        with pytest.raises(StorageError) as caught:
            await call
        assert caught.value.code == "TRYCREATE"
    assert len(env.files()) == 1


async def test_append_returns_appenduid_and_keeps_flags_and_date(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@p{unique}.test")
    drafts = await env.mailbox(user, "Drafts")
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    first = await env.ops.append(user, "Drafts", body(1), frozenset({"\\Draft", "\\Recent"}), when)
    second = await env.ops.append(user, "inbox", body(2), frozenset({"\\Seen"}), None)
    assert first.uidvalidity == drafts["uidvalidity"] and first.uid == 1
    assert second.uid == 1
    rows = await env.messages(user, "Drafts")
    assert list(rows[0]["flags"]) == ["\\Draft"] and rows[0]["internal_date"] == when
    assert (env.root / rows[0]["maildir_path"]).read_bytes() == body(1)
    assert rows[0]["maildir_path"].startswith(f"p{unique}.test/a/.Drafts/new/")
    assert (await env.mailbox(user, "INBOX"))["unseen_count"] == 0
    assert (await env.mailbox(user, "Drafts"))["unseen_count"] == 1


async def test_quota_refuses_append_and_copy_with_overquota_but_allows_move(env: Env, unique: str) -> None:
    big = len(body(0, pad=600))
    user = await make_user(env, f"a@q{unique}.test", quota_bytes=big + 100)
    await env.ops.append(user, "INBOX", body(0, pad=600), frozenset(), None)
    inbox = await env.mailbox(user, "INBOX")
    with pytest.raises(StorageError) as caught:
        await env.ops.append(user, "INBOX", body(1, pad=600), frozenset(), None)
    assert caught.value.code == "OVERQUOTA"
    with pytest.raises(StorageError) as caught:
        await env.ops.copy(user, inbox["id"], [1], "Archive")
    assert caught.value.code == "OVERQUOTA"
    assert len(env.files()) == 1
    result = await env.ops.move(user, inbox["id"], [1], "Archive")
    assert result.dest_uids == (1,)
    assert (await env.user(user))["storage_used"] == big


async def test_create_makes_parents_and_refuses_duplicates_and_bad_names(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@n{unique}.test")
    await env.ops.create_mailbox(user, "Projects/2024/Q1/")
    names = {r["name"] for r in await env.fetch("SELECT name FROM mailboxes WHERE user_id = $1", user)}
    assert {"Projects", "Projects/2024", "Projects/2024/Q1"} <= names
    await env.ops.create_mailbox(user, "inbox/Sub", special_use="\\Archive")
    assert (await env.mailbox(user, "INBOX/Sub"))["special_use"] == "\\Archive"
    a, b = await env.mailbox(user, "Projects"), await env.mailbox(user, "Projects/2024")
    assert a["uidvalidity"] != b["uidvalidity"]
    for name, code in (
        ("Projects/2024", "ALREADYEXISTS"), ("inbox", "ALREADYEXISTS"), ("Starred", "ALREADYEXISTS"),
        ("a//b", "CANNOT"), (".hidden", "CANNOT"), ("x/.y", "CANNOT"), ("bad\r\nname", "CANNOT"),
    ):
        with pytest.raises(StorageError) as caught:
            await env.ops.create_mailbox(user, name)
        assert caught.value.code == code, name
    with pytest.raises(StorageError) as caught:
        await env.ops.create_mailbox(user, "Odd", special_use="\\Bogus")
    assert caught.value.code == "USEATTR"


async def test_rename_moves_children_and_their_files_and_keeps_uidvalidity(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@r{unique}.test")
    await env.ops.create_mailbox(user, "Proj/Sub")
    await fill(env, user, 2, "Proj/Sub")
    await fill(env, user, 1, "Proj")
    sub = await env.mailbox(user, "Proj/Sub")
    old_files = env.files()

    await env.ops.rename_mailbox(user, "Proj", "Old/Proj")
    names = {r["name"] for r in await env.fetch("SELECT name FROM mailboxes WHERE user_id = $1", user)}
    assert {"Old", "Old/Proj", "Old/Proj/Sub"} <= names and "Proj" not in names and "Proj/Sub" not in names
    moved = await env.mailbox(user, "Old/Proj/Sub")
    assert moved["id"] == sub["id"] and moved["uidvalidity"] == sub["uidvalidity"]
    rows = await env.messages(user, "Old/Proj/Sub")
    assert [r["uid"] for r in rows] == [1, 2]
    for n, row in enumerate(rows):
        assert "/.Old.Proj.Sub/new/" in row["maildir_path"]
        assert (env.root / row["maildir_path"]).read_bytes() == body(n)
    assert not any(p.exists() for p in old_files)
    assert len(env.files()) == 3

    with pytest.raises(StorageError) as caught:
        await env.ops.rename_mailbox(user, "Old/Proj", "Archive")
    assert caught.value.code == "ALREADYEXISTS"
    with pytest.raises(StorageError) as caught:
        await env.ops.rename_mailbox(user, "Missing", "Other")
    assert caught.value.code == "NONEXISTENT"
    with pytest.raises(StorageError) as caught:
        await env.ops.rename_mailbox(user, "Old", "Old/Inner")
    assert caught.value.code == "CANNOT"


async def test_rename_inbox_moves_its_messages_and_inbox_stays_empty(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@i{unique}.test")
    await fill(env, user, 2)
    inbox = await env.mailbox(user, "INBOX")
    await env.ops.rename_mailbox(user, "inbox", "Saved/Old")
    after = await env.mailbox(user, "INBOX")
    assert after["id"] == inbox["id"] and after["message_count"] == 0
    assert after["uidvalidity"] == inbox["uidvalidity"]
    saved = await env.messages(user, "Saved/Old")
    assert [r["uid"] for r in saved] == [1, 2]
    assert all((env.root / r["maildir_path"]).is_file() for r in saved)
    assert len(env.files()) == 2
    assert (await env.user(user))["message_count"] == 2


async def test_delete_mailbox_removes_messages_and_files_but_keeps_children(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@d{unique}.test")
    await env.ops.create_mailbox(user, "Box/Child")
    await fill(env, user, 2, "Box")
    await fill(env, user, 1, "Box/Child")
    await env.ops.delete_mailbox(user, "Box")
    assert await env.mailbox(user, "Box") is None
    assert await env.mailbox(user, "Box/Child") is not None
    assert len(env.files()) == 1
    owner = await env.user(user)
    assert owner["message_count"] == 1 and owner["storage_used"] == len(body(0))
    for name, code in (("INBOX", "CANNOT"), ("Box", "NONEXISTENT"), ("Starred", "CANNOT")):
        with pytest.raises(StorageError) as caught:
            await env.ops.delete_mailbox(user, name)
        assert caught.value.code == code


async def test_set_subscribed_updates_an_existing_mailbox_only(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@s{unique}.test")
    await env.ops.set_subscribed(user, "Junk", False)
    assert (await env.mailbox(user, "Junk"))["subscribed"] is False
    with pytest.raises(StorageError) as caught:
        await env.ops.set_subscribed(user, "Nope", True)
    assert caught.value.code == "NONEXISTENT"


async def test_one_user_can_never_touch_another_users_mailbox_id(env: Env, unique: str) -> None:
    owner = await make_user(env, f"owner@x{unique}.test")
    other = await make_user(env, f"other@x{unique}.test")
    await fill(env, owner, 2)
    await env.ops.store_flags(owner, (await env.mailbox(owner, "INBOX"))["id"], [1], StoreMode.ADD,
                              frozenset({"\\Deleted"}))
    victim = await env.mailbox(owner, "INBOX")
    calls = (
        env.ops.store_flags(other, victim["id"], [1, 2], StoreMode.ADD, frozenset({"\\Deleted"})),
        env.ops.expunge(other, victim["id"]),
        env.ops.expunge(other, victim["id"], [1]),
        env.ops.copy(other, victim["id"], [1, 2], "INBOX"),
        env.ops.move(other, victim["id"], [1, 2], "INBOX"),
    )
    for call in calls:
        with pytest.raises(StorageError) as caught:
            await call
        assert caught.value.code == "NONEXISTENT"
    assert await env.mailbox(owner, "INBOX") == victim
    assert len(await env.messages(owner, "INBOX")) == 2
    assert await env.messages(other, "INBOX") == []


async def test_a_failed_copy_leaves_no_new_file_and_no_row(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@g{unique}.test")
    await fill(env, user, 2)
    inbox = await env.mailbox(user, "INBOX")
    rows = await env.messages(user, "INBOX")
    (env.root / rows[1]["maildir_path"]).unlink()  # uid 2's file vanished (operator, disk fault)
    before = env.files()
    with pytest.raises(StorageError) as caught:
        await env.ops.copy(user, inbox["id"], [1, 2], "Archive")
    assert caught.value.code == "SERVERBUG"
    assert env.files() == before  # uid 1's hard link was undone
    assert await env.messages(user, "Archive") == []
    assert (await env.mailbox(user, "Archive"))["uidnext"] == 1


async def test_concurrent_writers_get_distinct_uids_and_modseqs(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@k{unique}.test")
    appended = await asyncio.gather(
        *(env.ops.append(user, "INBOX", body(n), frozenset(), None) for n in range(10))
    )
    assert sorted(r.uid for r in appended) == list(range(1, 11))
    inbox = await env.mailbox(user, "INBOX")
    stored = await asyncio.gather(
        *(env.ops.store_flags(user, inbox["id"], [uid], StoreMode.ADD, frozenset({"\\Seen"})) for uid in range(1, 11))
    )
    modseqs = [r.changed[0].modseq for r in stored]
    assert len(set(modseqs)) == 10
    after = await env.mailbox(user, "INBOX")
    assert after["highestmodseq"] == max(modseqs) and after["unseen_count"] == 0


async def test_rename_leaves_no_empty_old_folder_behind(env: Env, unique: str) -> None:
    user = await make_user(env, f"a@o{unique}.test")
    await fill(env, user, 1, "Archive")
    user_dir = env.root / f"o{unique}.test" / "a"
    assert (user_dir / ".Archive").is_dir()
    await env.ops.rename_mailbox(user, "Archive", "Archive2")
    assert not (user_dir / ".Archive").exists() and (user_dir / ".Archive2" / "new").is_dir()


async def test_writes_that_change_storage_tell_the_delivery_cache(env: Env, unique: str) -> None:
    seen: list[int] = []
    ops = MailboxOps(env.pool, env.root, "mx.test", fsync=False, executor=env.executor, notifier=env.notifier,
                     on_user_changed=seen.append)
    user = await make_user(env, f"a@h{unique}.test")
    await ops.append(user, "INBOX", body(1), frozenset(), None)
    inbox = await env.mailbox(user, "INBOX")
    await ops.store_flags(user, inbox["id"], [1], StoreMode.ADD, frozenset({"\\Deleted"}))
    assert seen == [user]  # flags alone do not change what deliveries cache
    await ops.expunge(user, inbox["id"])
    await ops.create_mailbox(user, "New")
    assert seen == [user] * 3
