"""Directory rows by id, for the REST API (whose paths name objects by id, where `service` uses names).

Lookups return None when nothing matches: the caller decides whether that is a 404 and checks the
row's domain against who is asking before revealing anything. Changes still go through `service`,
except the two it has no function for (display name, role).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from whymail.directory.service import ROLES, InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class DomainRecord:
    id: int
    name: str
    is_active: bool
    max_users: int
    user_count: int
    alias_count: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserRef:
    """Just enough of a user to decide who may touch it."""

    id: int
    email: str
    domain_id: int
    role: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    email: str
    domain: str
    domain_id: int
    role: str
    display_name: str
    is_active: bool
    quota_bytes: int
    storage_used: int
    message_count: int
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class AliasRecord:
    id: int
    source: str
    domain_id: int
    domain: str
    destinations: tuple[str, ...]
    is_active: bool
    created_at: datetime

    @property
    def is_catch_all(self) -> bool:
        return self.source.startswith("@")


_DOMAINS = """
    SELECT d.id, d.name, d.is_active, d.max_users, d.created_at,
           (SELECT count(*) FROM users u WHERE u.domain_id = d.id) AS user_count,
           (SELECT count(*) FROM aliases a WHERE a.domain_id = d.id) AS alias_count
    FROM domains d"""

_ALIASES = """
    SELECT a.id, a.source, a.domain_id, d.name AS domain, a.destinations, a.is_active, a.created_at
    FROM aliases a JOIN domains d ON d.id = a.domain_id"""


def _domain(row: asyncpg.Record) -> DomainRecord:
    return DomainRecord(**dict(row))


def _alias(row: asyncpg.Record) -> AliasRecord:
    values = dict(row)
    values["destinations"] = tuple(values["destinations"])
    return AliasRecord(**values)


async def domain_by_id(conn: asyncpg.Connection, domain_id: int) -> DomainRecord | None:
    row = await conn.fetchrow(_DOMAINS + " WHERE d.id = $1", domain_id)
    return None if row is None else _domain(row)


async def domain_by_name(conn: asyncpg.Connection, name: str) -> DomainRecord | None:
    """The domain whose canonical name is `name` (as `service` returns it)."""
    row = await conn.fetchrow(_DOMAINS + " WHERE d.name = $1", name)
    return None if row is None else _domain(row)


async def list_domain_records(conn: asyncpg.Connection, only_id: int | None = None) -> list[DomainRecord]:
    """Every domain by name, or only the one with id `only_id`."""
    if only_id is None:
        rows = await conn.fetch(_DOMAINS + " ORDER BY d.name")
    else:
        rows = await conn.fetch(_DOMAINS + " WHERE d.id = $1", only_id)
    return [_domain(row) for row in rows]


async def user_by_id(conn: asyncpg.Connection, user_id: int) -> UserRef | None:
    row = await conn.fetchrow("SELECT id, email, domain_id, role FROM users WHERE id = $1", user_id)
    return None if row is None else UserRef(row["id"], row["email"], row["domain_id"], row["role"])


_USERS = """
    SELECT u.id, u.email, d.name AS domain, u.domain_id, u.role, u.display_name, u.is_active, u.quota_bytes,
           u.storage_used, u.message_count, u.created_at, u.last_login_at
    FROM users u JOIN domains d ON d.id = u.domain_id"""


async def user_record(conn: asyncpg.Connection, user_id: int) -> UserRecord | None:
    row = await conn.fetchrow(_USERS + " WHERE u.id = $1", user_id)
    return None if row is None else UserRecord(**dict(row))


async def users_of_domain(conn: asyncpg.Connection, domain_id: int) -> list[UserRecord]:
    rows = await conn.fetch(_USERS + " WHERE u.domain_id = $1 ORDER BY u.email", domain_id)
    return [UserRecord(**dict(row)) for row in rows]


async def alias_by_id(conn: asyncpg.Connection, alias_id: int) -> AliasRecord | None:
    row = await conn.fetchrow(_ALIASES + " WHERE a.id = $1", alias_id)
    return None if row is None else _alias(row)


async def alias_by_source(conn: asyncpg.Connection, source: str) -> AliasRecord | None:
    row = await conn.fetchrow(_ALIASES + " WHERE a.source = $1", source)
    return None if row is None else _alias(row)


async def aliases_of_domain(conn: asyncpg.Connection, domain_id: int) -> list[AliasRecord]:
    return [_alias(row) for row in await conn.fetch(_ALIASES + " WHERE a.domain_id = $1 ORDER BY a.source",
                                                      domain_id)]


async def set_display_name(conn: asyncpg.Connection, user_id: int, display_name: str) -> None:
    """Replace the user's display name (already validated: no control characters, ≤ 256 characters)."""
    status = await conn.execute(
        "UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1", user_id, display_name.strip(),
    )
    if status.endswith(" 0"):
        raise NotFound(f"user {user_id} does not exist")


async def set_role(conn: asyncpg.Connection, user_id: int, role: str) -> None:
    """Make the user a `user`, `owner` (of their domain) or `admin`."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    status = await conn.execute("UPDATE users SET role = $2, updated_at = now() WHERE id = $1", user_id, role)
    if status.endswith(" 0"):
        raise NotFound(f"user {user_id} does not exist")
