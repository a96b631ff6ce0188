"""`outbound_queue` rows: enqueue, claim, record attempts, list/retry/delete, cleanup.

One row per (submission, recipient domain): the unit a DeliveryQueue sends over one connection.
Claims use `FOR UPDATE SKIP LOCKED`, so several DeliveryQueue actors share the table without
handing one row to two of them; a claim names its holder, which releases it when it restarts, and
claims of a holder that never comes back are released after `queue.claim_timeout`. Per-recipient
results are merged into `recipient_results` as soon as a remote server answered, so a worker killed
mid-batch leaves only the recipients without an answer to be sent again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel, Field

QUEUE_CHANNEL = "whymail_queue"
FINAL_STATES = ("sent", "failed", "dead")
STATES = ("pending", "sending", "sent", "deferred", "failed", "dead")


class RecipientState(BaseModel):
    """The last answer for one recipient: `delivered` and `failed` are final, `deferred` is retried."""

    status: str
    code: int = 0
    enhanced: str = ""
    text: str = ""
    remote: str = ""
    at: float = 0.0
    bounced: bool = False


class QueueEntry(BaseModel):
    id: int
    delivery_id: uuid.UUID
    user_id: int | None
    sender: str
    recipient_domain: str
    recipients: list[str]
    recipient_results: dict[str, RecipientState] = Field(default_factory=dict)
    message_path: str
    size: int
    status: str
    priority: int
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None = None
    claimed_by: str | None = None
    expires_at: dt.datetime
    delay_warned_at: dt.datetime | None = None
    dsn_envid: str | None = None
    dsn_ret: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime

    def open_recipients(self) -> list[str]:
        """Recipients without a final answer yet."""
        done = {r for r, s in self.recipient_results.items() if s.status in ("delivered", "failed")}
        return [r for r in self.recipients if r not in done]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> QueueEntry:
        data = dict(row)
        results = data.get("recipient_results")
        if isinstance(results, str):
            data["recipient_results"] = orjson.loads(results)
        return cls.model_validate(data)


_COLUMNS = (
    "id, delivery_id, user_id, sender, recipient_domain, recipients, recipient_results, message_path, size, "
    "status, priority, attempts, max_attempts, next_attempt_at, last_error, claimed_by, expires_at, "
    "delay_warned_at, dsn_envid, dsn_ret, created_at, updated_at"
)


def group_by_domain(recipients: list[str]) -> dict[str, list[str]]:
    """Recipients by lower-cased domain, each address kept once (first spelling wins)."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for address in recipients:
        key = address.lower()
        if key in seen:
            continue
        seen.add(key)
        local, at, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".")
        if not at or not local or not domain:
            raise ValueError(f"recipient without a domain: {address!r}")
        groups.setdefault(domain, []).append(address)
    return groups


class NewEntry(BaseModel):
    """One submission to queue: its rows are one per recipient domain."""

    delivery_id: uuid.UUID
    user_id: int | None
    sender: str
    recipients: list[str]
    message_path: str
    size: int
    priority: int = 0
    envid: str | None = None
    ret: str | None = None


_ENQUEUE = f"""
    WITH input AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(
            delivery_id uuid, user_id bigint, sender text, domain text, recipients jsonb, message_path text,
            size bigint, priority smallint, envid text, ret text)
    ), inserted AS (
        INSERT INTO outbound_queue (delivery_id, user_id, sender, recipient_domain, recipients, message_path,
                                    size, priority, max_attempts, expires_at, dsn_envid, dsn_ret)
        SELECT i.delivery_id, i.user_id, i.sender, i.domain, ARRAY(SELECT jsonb_array_elements_text(i.recipients)),
               i.message_path, i.size, i.priority, $2, now() + make_interval(secs => $3), i.envid, i.ret
        FROM input i
        ON CONFLICT (delivery_id, recipient_domain) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) AS n, pg_notify('{QUEUE_CHANNEL}', '') FROM inserted
"""


async def enqueue_many(
    conn: asyncpg.Connection, entries: list[NewEntry], *, max_attempts: int, lifetime: float
) -> int:
    """Insert the rows of several submissions (idempotent by delivery id) and wake the DeliveryQueues,
    in one statement: the NOTIFY is delivered when it commits."""
    rows = []
    for entry in entries:
        for domain, recipients in group_by_domain(entry.recipients).items():
            rows.append({
                "delivery_id": str(entry.delivery_id), "user_id": entry.user_id, "sender": entry.sender,
                "domain": domain, "recipients": recipients, "message_path": entry.message_path,
                "size": entry.size, "priority": entry.priority, "envid": entry.envid, "ret": entry.ret,
            })
    if not rows:
        return 0
    record = await conn.fetchrow(_ENQUEUE, orjson.dumps(rows).decode(), max_attempts, lifetime)
    return int(record["n"])


async def enqueue(
    conn: asyncpg.Connection,
    *,
    delivery_id: uuid.UUID,
    user_id: int | None,
    sender: str,
    recipients: list[str],
    message_path: str,
    size: int,
    max_attempts: int,
    lifetime: float,
    priority: int = 0,
    envid: str | None = None,
    ret: str | None = None,
) -> int:
    """`enqueue_many` for one submission."""
    entry = NewEntry(
        delivery_id=delivery_id, user_id=user_id, sender=sender, recipients=recipients,
        message_path=message_path, size=size, priority=priority, envid=envid, ret=ret,
    )
    return await enqueue_many(conn, [entry], max_attempts=max_attempts, lifetime=lifetime)


async def claim(conn: asyncpg.Connection, worker: str, limit: int) -> list[QueueEntry]:
    """Take up to `limit` due rows (highest priority, then oldest due) for `worker`."""
    rows = await conn.fetch(
        f"""
        WITH picked AS (
            SELECT id FROM outbound_queue
            WHERE status IN ('pending', 'deferred') AND next_attempt_at <= now()
            ORDER BY priority DESC, next_attempt_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE outbound_queue q
        SET status = 'sending', claimed_by = $1, claimed_at = now(), updated_at = now()
        FROM picked WHERE q.id = picked.id
        RETURNING {", ".join("q." + c.strip() for c in _COLUMNS.split(","))}
        """,
        worker, limit,
    )
    return [QueueEntry.from_row(row) for row in rows]


async def release_claims(
    conn: asyncpg.Connection, worker: str | None = None, stale_after: float = 0.0, *, alive: str | None = None
) -> int:
    """Put rows back for any worker: those of `worker` (restarted), or claims not renewed for
    `stale_after` s (their holder vanished) except those of `alive`, the caller, who knows its own."""
    if worker is not None:
        status = await conn.execute(
            "UPDATE outbound_queue SET status = 'deferred', claimed_by = NULL, claimed_at = NULL, "
            "next_attempt_at = now(), updated_at = now() WHERE status = 'sending' AND claimed_by = $1",
            worker,
        )
    else:
        status = await conn.execute(
            "UPDATE outbound_queue SET status = 'deferred', claimed_by = NULL, claimed_at = NULL, "
            "next_attempt_at = now(), updated_at = now() "
            "WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => $1) "
            "AND claimed_by IS DISTINCT FROM $2",
            stale_after, alive,
        )
    return int(status.split()[-1])


async def renew_claims(conn: asyncpg.Connection, worker: str) -> int:
    """Heartbeat: `worker` still holds its claims (a long round must not look abandoned)."""
    status = await conn.execute(
        "UPDATE outbound_queue SET claimed_at = now() WHERE status = 'sending' AND claimed_by = $1", worker
    )
    return int(status.split()[-1])


async def unclaim(conn: asyncpg.Connection, worker: str, ids: list[int]) -> int:
    """Give claimed rows back untouched (due at once), e.g. what did not fit in a round."""
    status = await conn.execute(
        "UPDATE outbound_queue SET status = CASE WHEN attempts = 0 THEN 'pending' ELSE 'deferred' END, "
        "claimed_by = NULL, claimed_at = NULL, updated_at = now() "
        "WHERE id = ANY($2) AND claimed_by = $1 AND status = 'sending'",
        worker, ids,
    )
    return int(status.split()[-1])


def _results_json(results: dict[str, RecipientState]) -> str:
    return orjson.dumps({r: s.model_dump() for r, s in results.items()}).decode()


async def record_results(
    conn: asyncpg.Connection, entry_id: int, worker: str, results: dict[str, RecipientState]
) -> bool:
    """Merge per-recipient answers while the row is still claimed by `worker`; False if it is not."""
    status = await conn.execute(
        "UPDATE outbound_queue SET recipient_results = recipient_results || $3::jsonb, updated_at = now() "
        "WHERE id = $1 AND claimed_by = $2 AND status = 'sending'",
        entry_id, worker, _results_json(results),
    )
    return status.endswith(" 1")


async def finish_attempt(
    conn: asyncpg.Connection,
    entry_id: int,
    worker: str,
    *,
    status: str,
    attempts: int,
    next_attempt_at: dt.datetime | None,
    last_error: str | None,
    results: dict[str, RecipientState],
    delay_warned: bool = False,
) -> bool:
    """End an attempt: new state, merged results, claim released. False if the claim was lost."""
    if status not in STATES or status == "sending":
        raise ValueError(f"bad final state {status!r}")
    outcome = await conn.execute(
        """
        UPDATE outbound_queue
        SET status = $3, attempts = $4, next_attempt_at = coalesce($5, next_attempt_at), last_error = $6,
            recipient_results = recipient_results || $7::jsonb, claimed_by = NULL, claimed_at = NULL,
            delay_warned_at = CASE WHEN $8 THEN now() ELSE delay_warned_at END, updated_at = now()
        WHERE id = $1 AND claimed_by = $2 AND status = 'sending'
        """,
        entry_id, worker, status, attempts, next_attempt_at, last_error, _results_json(results), delay_warned,
    )
    return outcome.endswith(" 1")


async def list_entries(
    conn: asyncpg.Connection, *, statuses: list[str] | None = None, limit: int = 100, ids: list[int] | None = None
) -> list[QueueEntry]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM outbound_queue "
        "WHERE ($1::text[] IS NULL OR status = ANY($1)) AND ($2::bigint[] IS NULL OR id = ANY($2)) "
        "ORDER BY id LIMIT $3",
        statuses, ids, limit,
    )
    return [QueueEntry.from_row(row) for row in rows]


async def counts_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM outbound_queue GROUP BY status")
    return {row["status"]: int(row["n"]) for row in rows}


async def retry_entries(conn: asyncpg.Connection, ids: list[int], *, lifetime: float) -> list[int]:
    """Operator retry of finished-but-undelivered rows (failed, dead) or waiting ones (deferred):
    due now, attempts reset, a new lifetime; recipients that failed get another chance."""
    rows = await conn.fetch(
        """
        UPDATE outbound_queue
        SET status = 'pending', attempts = 0, next_attempt_at = now(), claimed_by = NULL, claimed_at = NULL,
            expires_at = now() + make_interval(secs => $2), delay_warned_at = NULL, updated_at = now(),
            recipient_results = coalesce((
                SELECT jsonb_object_agg(r.key, r.value) FROM jsonb_each(recipient_results) r
                WHERE r.value->>'status' = 'delivered'), '{}'::jsonb)
        WHERE id = ANY($1) AND status IN ('failed', 'dead', 'deferred', 'pending')
        RETURNING id
        """,
        ids, lifetime,
    )
    if rows:
        await conn.execute(f"NOTIFY {QUEUE_CHANNEL}")
    return [row["id"] for row in rows]


async def delete_entries(conn: asyncpg.Connection, ids: list[int]) -> list[int]:
    """Remove rows that are not being sent right now (a row in 'sending' is left alone)."""
    rows = await conn.fetch(
        "DELETE FROM outbound_queue WHERE id = ANY($1) AND status <> 'sending' RETURNING id", ids
    )
    return [row["id"] for row in rows]


async def cleanup(conn: asyncpg.Connection, older_than: float) -> list[str]:
    """Delete finished rows older than `older_than` s; returns spool paths no row names any more.

    Two statements in one transaction: inside a single statement every part sees the same snapshot,
    so the deleted rows would still seem to name their files.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            "DELETE FROM outbound_queue "
            "WHERE status IN ('sent', 'failed', 'dead') AND updated_at < now() - make_interval(secs => $1) "
            "RETURNING message_path",
            older_than,
        )
        paths = sorted({row["message_path"] for row in rows})
        if not paths:
            return []
        still = await conn.fetch(
            "SELECT DISTINCT message_path FROM outbound_queue WHERE message_path = ANY($1)", paths
        )
    named = {row["message_path"] for row in still}
    return [path for path in paths if path not in named]


async def submissions_today(conn: asyncpg.Connection, user_id: int) -> int:
    """Messages `user_id` submitted in the last 24 hours (for `limits.per_user_daily_send`)."""
    value = await conn.fetchval(
        "SELECT count(DISTINCT delivery_id) FROM outbound_queue "
        "WHERE user_id = $1 AND created_at > now() - interval '1 day'",
        user_id,
    )
    return int(value or 0)


def as_json(entry: QueueEntry) -> dict[str, Any]:
    return entry.model_dump(mode="json")
