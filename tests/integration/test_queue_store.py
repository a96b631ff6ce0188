"""The outbound queue's SQL against the session's PostgreSQL: claims, heartbeats, cleanup."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from whymail.queue import store
from whymail.queue.spool import Spool


@pytest.fixture
async def conn(pg_dsn: str):
    connection = await asyncpg.connect(pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def _enqueue(conn, path: str, domain: str | None = None) -> uuid.UUID:
    delivery_id = uuid.uuid4()
    domain = domain or f"q{uuid.uuid4().hex[:8]}.test"
    await store.enqueue(conn, delivery_id=delivery_id, user_id=None, sender="a@x.test",
                        recipients=[f"b@{domain}"], message_path=path, size=10, max_attempts=3, lifetime=3600)
    return delivery_id


async def _rows(conn, delivery_id: uuid.UUID) -> list:
    return await conn.fetch("SELECT * FROM outbound_queue WHERE delivery_id = $1", delivery_id)


async def test_cleanup_removes_finished_rows_and_returns_only_unreferenced_spool_files(conn, tmp_path):
    spool = Spool(tmp_path, fsync=False)
    shared = await spool.write(uuid.uuid4(), b"shared")
    alone = await spool.write(uuid.uuid4(), b"alone")
    done_shared = await _enqueue(conn, shared)
    waiting_shared = await _enqueue(conn, shared)  # a forward still waiting names the same file
    done_alone = await _enqueue(conn, alone)
    await conn.execute(
        "UPDATE outbound_queue SET status = 'sent', updated_at = now() - interval '2 days' "
        "WHERE delivery_id = ANY($1)", [done_shared, done_alone],
    )
    paths = await store.cleanup(conn, older_than=86_400)
    assert paths == [alone]
    assert await _rows(conn, done_shared) == [] and await _rows(conn, done_alone) == []
    assert len(await _rows(conn, waiting_shared)) == 1
    spool.remove(paths)
    assert spool.path_of(shared).exists() and not spool.path_of(alone).exists()


async def test_a_live_workers_old_claims_are_renewed_not_released(conn):
    mine = await _enqueue(conn, ".spool/00/new/" + uuid.uuid4().hex)
    theirs = await _enqueue(conn, ".spool/00/new/" + uuid.uuid4().hex)
    worker_a, worker_b = f"wa-{uuid.uuid4().hex[:6]}", f"wb-{uuid.uuid4().hex[:6]}"
    await conn.execute("UPDATE outbound_queue SET status = 'sending', claimed_by = $2, "
                       "claimed_at = now() - interval '1 hour' WHERE delivery_id = $1", mine, worker_a)
    await conn.execute("UPDATE outbound_queue SET status = 'sending', claimed_by = $2, "
                       "claimed_at = now() - interval '1 hour' WHERE delivery_id = $1", theirs, worker_b)
    assert await store.renew_claims(conn, worker_a) == 1
    released = await store.release_claims(conn, stale_after=600, alive=worker_a)
    assert released >= 1
    assert (await _rows(conn, mine))[0]["status"] == "sending"
    row = (await _rows(conn, theirs))[0]
    assert row["status"] == "deferred" and row["claimed_by"] is None


async def test_unclaim_gives_rows_back_untouched(conn):
    delivery_id = await _enqueue(conn, ".spool/00/new/" + uuid.uuid4().hex)
    worker = f"w-{uuid.uuid4().hex[:6]}"
    row = (await _rows(conn, delivery_id))[0]
    await conn.execute("UPDATE outbound_queue SET status = 'sending', claimed_by = $2, claimed_at = now() "
                       "WHERE id = $1", row["id"], worker)
    assert await store.unclaim(conn, "someone-else", [row["id"]]) == 0
    assert await store.unclaim(conn, worker, [row["id"]]) == 1
    row = (await _rows(conn, delivery_id))[0]
    assert (row["status"], row["claimed_by"], row["attempts"]) == ("pending", None, 0)


async def test_enqueue_is_idempotent_per_delivery_id_and_groups_by_domain(conn):
    delivery_id = uuid.uuid4()
    domain = f"q{uuid.uuid4().hex[:8]}.test"
    kwargs = dict(delivery_id=delivery_id, user_id=None, sender="a@x.test",
                  recipients=[f"b@{domain}", f"c@{domain}", "d@other.test"], message_path=".spool/00/new/" +
                  uuid.uuid4().hex, size=10, max_attempts=3, lifetime=3600)
    assert await store.enqueue(conn, **kwargs) == 2
    assert await store.enqueue(conn, **kwargs) == 0
    rows = {r["recipient_domain"]: list(r["recipients"]) for r in await _rows(conn, delivery_id)}
    assert rows == {domain: [f"b@{domain}", f"c@{domain}"], "other.test": ["d@other.test"]}
