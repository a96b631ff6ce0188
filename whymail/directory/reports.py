"""What operators read and tune: storage per domain and user, the audit trail, the `system_config` table.

`domain_id=None` means the whole system (an admin); a domain id narrows every figure and row to
that domain (its owner). Audit rows belong to a domain when the actor is one of its users (or was:
the row keeps the address after the user is deleted) or when the change was made in it
(`details.domain`, written by the API for directory changes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class DomainUsage:
    domain_id: int
    domain: str
    user_count: int
    storage_used: int
    message_count: int
    quota_bytes: int


@dataclass(frozen=True, slots=True)
class UserUsage:
    user_id: int
    email: str
    storage_used: int
    message_count: int
    quota_bytes: int

    @property
    def percent_used(self) -> float | None:
        if not self.quota_bytes:
            return None
        return round(100.0 * self.storage_used / self.quota_bytes, 2)


@dataclass(frozen=True, slots=True)
class StorageReport:
    domains: list[DomainUsage]
    top_users: list[UserUsage]

    @property
    def total_storage_used(self) -> int:
        return sum(d.storage_used for d in self.domains)

    @property
    def total_messages(self) -> int:
        return sum(d.message_count for d in self.domains)


async def storage_report(conn: asyncpg.Connection, domain_id: int | None, top: int) -> StorageReport:
    """Totals per domain (every domain, or just `domain_id`) and the `top` users by storage used."""
    domains = await conn.fetch(
        """SELECT d.id AS domain_id, d.name AS domain, count(u.id) AS user_count,
                  coalesce(sum(u.storage_used), 0)::bigint AS storage_used,
                  coalesce(sum(u.message_count), 0)::bigint AS message_count,
                  coalesce(sum(u.quota_bytes), 0)::bigint AS quota_bytes
             FROM domains d LEFT JOIN users u ON u.domain_id = d.id
            WHERE $1::bigint IS NULL OR d.id = $1
            GROUP BY d.id ORDER BY d.name""",
        domain_id,
    )
    users = await conn.fetch(
        """SELECT id AS user_id, email, storage_used, message_count, quota_bytes FROM users
            WHERE $1::bigint IS NULL OR domain_id = $1
            ORDER BY storage_used DESC, email LIMIT $2""",
        domain_id, top,
    )
    return StorageReport([DomainUsage(**dict(r)) for r in domains], [UserUsage(**dict(r)) for r in users])


# --- system config -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SystemSettings:
    values: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None


async def read_settings(conn: asyncpg.Connection) -> SystemSettings:
    """Every key of `system_config` with its JSON value, and when the newest change was made."""
    rows = await conn.fetch("SELECT key, value, updated_at FROM system_config ORDER BY key")
    return SystemSettings(
        {row["key"]: json.loads(row["value"]) for row in rows},
        max((row["updated_at"] for row in rows), default=None),
    )


async def write_settings(conn: asyncpg.Connection, changes: dict[str, Any], user_id: int | None) -> SystemSettings:
    """Set each key to its value (None removes it) in one transaction; the result as `read_settings`."""
    removed = [key for key, value in changes.items() if value is None]
    kept = [(key, json.dumps(value), user_id) for key, value in changes.items() if value is not None]
    async with conn.transaction():
        if removed:
            await conn.execute("DELETE FROM system_config WHERE key = ANY($1::text[])", removed)
        if kept:
            await conn.executemany(
                """INSERT INTO system_config (key, value, updated_by) VALUES ($1, $2::jsonb, $3)
                   ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by,
                                                   updated_at = now()""",
                kept,
            )
    return await read_settings(conn)


# --- audit ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: str | None = None
    actor_email: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # the cursor: rows with a smaller id (older)
    limit: int = 100


async def audit_rows(
    conn: asyncpg.Connection, wanted: AuditFilter, domain_id: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Matching rows, newest first, and the cursor of the next (older) page or None at the end."""
    rows = await conn.fetch(
        """SELECT l.id, l.at, l.actor_user_id, l.actor_email, host(l.actor_ip) AS actor_ip, l.action,
                  l.target_type, l.target_id, l.details
             FROM audit_logs l
            WHERE ($1::text IS NULL OR l.action = $1)
              AND ($2::text IS NULL OR lower(l.actor_email) = lower($2))
              AND ($3::timestamptz IS NULL OR l.at >= $3)
              AND ($4::timestamptz IS NULL OR l.at < $4)
              AND ($5::bigint IS NULL OR l.id < $5)
              AND ($6::bigint IS NULL OR EXISTS (
                    SELECT 1 FROM domains d WHERE d.id = $6 AND (
                        l.actor_user_id IN (SELECT u.id FROM users u WHERE u.domain_id = d.id)
                        OR lower(l.actor_email) LIKE '%@' || d.name
                        OR l.details ->> 'domain' = d.name)))
            ORDER BY l.id DESC LIMIT $7""",
        wanted.action, wanted.actor_email, wanted.since, wanted.until, wanted.before_id, domain_id,
        wanted.limit + 1,
    )
    page = [dict(row) | {"details": json.loads(row["details"])} for row in rows[: wanted.limit]]
    next_cursor = page[-1]["id"] if len(rows) > wanted.limit else None
    return page, next_cursor
