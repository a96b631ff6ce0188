"""MailStore (the shard's write path) against the real PostgreSQL and a real Maildir, no Ray.

These are the failure paths: overlapping attempts of one batch, a recipient deleted under the
shard's cache, an unstorable recipient, a Maildir removed by an operator. In every case a row exists
exactly when its file exists, and every `ok` outcome is stored exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from whymail.auth.passwords import hash_password
from whymail.db.pool import create_pool
from whymail.directory import service
from whymail.store.delivery import MailStore
from whymail.store.models import DeliveryBatch, DeliveryItem, Recipient


@pytest.fixture
async def store(pg_dsn: str, tmp_path: Path):
    pool = await create_pool(pg_dsn, min_size=1, max_size=4)
    executor = ThreadPoolExecutor(8)
    yield MailStore(pool, tmp_path / "maildir", "mx.test", fsync=True, executor=executor)
    await pool.close()
    executor.shutdown()


async def _users(pg_dsn: str, domain: str, *locals_: str) -> dict[str, Recipient]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await service.add_domain(conn, domain)
        found = {}
        for local in locals_:
            info = await service.add_user(conn, f"{local}@{domain}", hash_password("pw-123456", rounds=4), quota_bytes=0)
            found[local] = Recipient(user_id=info.id, domain=domain, local_part=local)
        return found
    finally:
        await conn.close()


def _batch(recipients: list[Recipient], attempt: int = 0) -> DeliveryBatch:
    now = time.time()
    items = [
        DeliveryItem(delivery_id=uuid.uuid4(), body_index=0, recipient=r, internal_date=now) for r in recipients
    ]
    return DeliveryBatch(bodies=[b"Subject: store test\r\n\r\nbody\r\n"], items=items, attempt=attempt)


async def _rows_and_files(pg_dsn: str, root: Path, user_id: int) -> tuple[set[str], set[str]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = {r["maildir_path"] for r in await conn.fetch("SELECT maildir_path FROM messages WHERE user_id = $1", user_id)}
    finally:
        await conn.close()
    return rows, _files_in_new(root)


def _files_in_new(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.parent.name == "new"}


async def test_overlapping_attempts_of_one_batch_store_each_message_once_with_its_file(
    store: MailStore, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    users = await _users(pg_dsn, f"ov{unique}.test", "a", "b")
    batch = _batch([users["a"], users["b"]] * 10, attempt=1)
    first, second = await asyncio.gather(store.deliver_batch(batch), store.deliver_batch(batch))
    for report in (first, second):
        for outcome in report.outcomes:
            assert outcome.ok or outcome.error_code == 451
    assert all(o.ok for o in first.outcomes) or all(o.ok for o in second.outcomes)
    for user in users.values():
        rows, _ = await _rows_and_files(pg_dsn, tmp_path / "maildir", user.user_id)
        assert len(rows) == 10
    _, files = await _rows_and_files(pg_dsn, tmp_path / "maildir", users["a"].user_id)
    all_rows = set()
    for user in users.values():
        all_rows |= (await _rows_and_files(pg_dsn, tmp_path / "maildir", user.user_id))[0]
    assert all_rows == files, "every row has its file and every file its row"


async def test_a_recipient_deleted_under_the_cache_stores_nothing_half(
    store: MailStore, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    domain = f"del{unique}.test"
    users = await _users(pg_dsn, domain, "gone", "stays")
    first = await store.deliver_batch(_batch([users["gone"]]))
    assert first.outcomes[0].ok
    conn = await asyncpg.connect(pg_dsn)
    try:
        await service.delete_user(conn, f"gone@{domain}")
    finally:
        await conn.close()
    report = await store.deliver_batch(_batch([users["gone"], users["stays"]]))
    assert [o.ok for o in report.outcomes] == [False, False]
    rows, files = await _rows_and_files(pg_dsn, tmp_path / "maildir", users["stays"].user_id)
    assert rows == set()
    assert not any("/stays/" in f for f in files), "no file without its row"
    retry = await store.deliver_batch(_batch([users["stays"]]))
    assert retry.outcomes[0].ok, "the caches were refreshed: the next attempt stores"
    rows, files = await _rows_and_files(pg_dsn, tmp_path / "maildir", users["stays"].user_id)
    assert len(rows) == 1 and rows <= files


async def test_an_unstorable_recipient_is_refused_alone(store: MailStore, pg_dsn: str, unique: str) -> None:
    users = await _users(pg_dsn, f"bad{unique}.test", "ok")
    bad = Recipient(user_id=users["ok"].user_id, domain=f"bad{unique}.test", local_part="../escape")
    report = await store.deliver_batch(_batch([bad, users["ok"]]))
    assert (report.outcomes[0].ok, report.outcomes[0].error_code) == (False, 550)
    assert report.outcomes[1].ok


async def test_a_maildir_removed_by_an_operator_is_recreated(
    store: MailStore, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    domain = f"rm{unique}.test"
    users = await _users(pg_dsn, domain, "c")
    assert (await store.deliver_batch(_batch([users["c"]]))).outcomes[0].ok
    shutil.rmtree(tmp_path / "maildir" / domain / "c")
    report = await store.deliver_batch(_batch([users["c"]]))
    assert report.outcomes[0].ok
    assert len(list((tmp_path / "maildir" / domain / "c" / "new").iterdir())) == 1


async def test_concurrent_batches_never_take_a_user_over_quota(store: MailStore, pg_dsn: str, unique: str) -> None:
    domain = f"cq{unique}.test"
    users = await _users(pg_dsn, domain, "q")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE users SET quota_bytes = 1500 WHERE id = $1", users["q"].user_id)
    finally:
        await conn.close()
    limited = users["q"].model_copy(update={"quota_bytes": 1500})
    big = b"Subject: big\r\n\r\n" + b"x" * 1000 + b"\r\n"
    batches = [
        DeliveryBatch(bodies=[big], items=[_batch([limited]).items[0]]) for _ in range(2)
    ]
    reports = await asyncio.gather(*(store.deliver_batch(b) for b in batches))
    assert sorted(r.outcomes[0].ok for r in reports) == [False, True]
    conn = await asyncpg.connect(pg_dsn)
    try:
        used = await conn.fetchval("SELECT storage_used FROM users WHERE id = $1", users["q"].user_id)
    finally:
        await conn.close()
    assert used == len(big)
