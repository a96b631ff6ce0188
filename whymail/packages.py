"""Packages: the limits a domain is assigned with (users, storage, per-user quota), the templates
they are copied from, and the check that keeps a domain within its package.

Schema (migration 002): `packages` and `package_templates` share their limit columns, where 0 means
unlimited; `domains.package_id` names a domain's package (NULL: no package, no limits). The largest
quota one user may have has no column: it lives in `features` under `max_user_quota_bytes`.

Limits are checked when a change would grow a domain (a new user, a larger quota), never to take
back what exists: assigning a smaller package leaves the domain as it is and refuses the next growth.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

USER_QUOTA_KEY = "max_user_quota_bytes"


class PackageError(Exception):
    """A refused package operation; the message says why in words an operator understands."""


class PackageNotFound(PackageError):
    pass


class PackageNameTaken(PackageError):
    pass


class LimitExceeded(PackageError):
    """The change would take a domain beyond its package."""


@dataclass(frozen=True, slots=True)
class Limits:
    """0 means unlimited everywhere."""

    max_users: int = 0
    max_storage_bytes: int = 0
    max_send_per_day: int = 0
    max_user_quota_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PackageRecord:
    id: int
    template_id: int | None
    name: str
    description: str
    limits: Limits
    features: dict[str, Any]  # without USER_QUOTA_KEY, which is in `limits`
    is_active: bool
    domain_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    id: int
    name: str
    description: str
    limits: Limits
    features: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DomainUsage:
    """What a domain holds now, seen from the user whose change is being checked."""

    users: int
    allocated_by_others: int  # sum of the other users' quotas (unlimited ones count 0)
    storage_used: int
    current_quota: int | None  # of the user being changed; None for a new user


# --- the limit check -----------------------------------------------------------------------------

def _grows(quota: int, current: int | None) -> bool:
    """Whether setting `quota` (0: unlimited) where `current` was gives the user more room."""
    if current is None:
        return True
    if quota == 0:
        return current != 0
    return current != 0 and quota > current


def limit_violation(package: str, limits: Limits, usage: DomainUsage, quota: int) -> str | None:
    """Why a new user (usage.current_quota None) or a quota change to `quota` breaks the package, or None."""
    new_user = usage.current_quota is None
    if new_user and limits.max_users and usage.users >= limits.max_users:
        return f"the domain has reached the limit of {limits.max_users} users of its package {package!r}"
    if not _grows(quota, usage.current_quota):
        return None
    cap = limits.max_user_quota_bytes
    if cap and (quota == 0 or quota > cap):
        asked = "an unlimited quota" if quota == 0 else f"a quota of {quota} bytes"
        return f"{asked} is over the largest quota per user of the package {package!r} ({cap} bytes)"
    storage = limits.max_storage_bytes
    if storage:
        if quota == 0:
            return (f"an unlimited quota is not possible: the package {package!r} limits the domain's "
                    f"storage to {storage} bytes")
        if new_user and usage.storage_used >= storage:
            return (f"the domain already stores {usage.storage_used} bytes, the storage limit of its "
                    f"package {package!r} is {storage} bytes")
        total = usage.allocated_by_others + quota
        if total > storage:
            return (f"the domain's quotas would total {total} bytes, over the storage limit of its "
                    f"package {package!r} ({storage} bytes)")
    return None


async def check_user_limits(
    conn: asyncpg.Connection, domain_id: int, *, quota_bytes: int, user_id: int | None = None
) -> None:
    """Raise LimitExceeded if creating a user (`user_id` None) with `quota_bytes`, or setting user
    `user_id`'s quota to it, would take the domain beyond its package. Call it inside the transaction
    that makes the change: it locks the domain row like `service.add_user`, so that concurrent changes
    in one domain are checked one after another."""
    row = await conn.fetchrow(
        """SELECT p.name, p.max_users, p.max_storage_bytes, p.max_send_per_day, p.features
             FROM domains d LEFT JOIN packages p ON p.id = d.package_id
            WHERE d.id = $1 FOR NO KEY UPDATE OF d""",
        domain_id,
    )
    if row is None or row["name"] is None:
        return
    limits = _limits(row)
    counts = await conn.fetchrow(
        """SELECT count(*) AS users,
                  coalesce(sum(quota_bytes) FILTER (WHERE id <> $2), 0)::bigint AS allocated,
                  coalesce(sum(storage_used), 0)::bigint AS used,
                  max(quota_bytes) FILTER (WHERE id = $2) AS current
             FROM users WHERE domain_id = $1""",
        domain_id, user_id or 0,
    )
    usage = DomainUsage(
        users=counts["users"], allocated_by_others=counts["allocated"], storage_used=counts["used"],
        current_quota=None if user_id is None else (counts["current"] or 0),
    )
    why = limit_violation(row["name"], limits, usage, quota_bytes)
    if why is not None:
        raise LimitExceeded(why)


# --- packages ------------------------------------------------------------------------------------

def _features(value: Any) -> dict[str, Any]:
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value or {})


def _limits(row: asyncpg.Record) -> Limits:
    cap = _features(row["features"]).get(USER_QUOTA_KEY, 0)
    return Limits(
        max_users=row["max_users"], max_storage_bytes=row["max_storage_bytes"],
        max_send_per_day=row["max_send_per_day"], max_user_quota_bytes=cap if isinstance(cap, int) else 0,
    )


def _stored_features(limits: Limits, features: dict[str, Any]) -> str:
    stored = {k: v for k, v in features.items() if k != USER_QUOTA_KEY}
    if limits.max_user_quota_bytes:
        stored[USER_QUOTA_KEY] = limits.max_user_quota_bytes
    return orjson.dumps(stored).decode()


def _visible_features(value: Any) -> dict[str, Any]:
    return {k: v for k, v in _features(value).items() if k != USER_QUOTA_KEY}


_PACKAGE_COLUMNS = """p.id, p.template_id, p.name, p.description, p.max_users, p.max_storage_bytes,
    p.max_send_per_day, p.features, p.is_active, p.created_at, p.updated_at,
    (SELECT count(*) FROM domains d WHERE d.package_id = p.id) AS domain_count"""


def _package(row: asyncpg.Record) -> PackageRecord:
    return PackageRecord(
        id=row["id"], template_id=row["template_id"], name=row["name"], description=row["description"],
        limits=_limits(row), features=_visible_features(row["features"]), is_active=row["is_active"],
        domain_count=row["domain_count"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


async def list_packages(conn: asyncpg.Connection) -> list[PackageRecord]:
    """Every package, by name, with how many domains use it."""
    rows = await conn.fetch(f"SELECT {_PACKAGE_COLUMNS} FROM packages p ORDER BY p.name")
    return [_package(r) for r in rows]


async def package_by_id(conn: asyncpg.Connection, package_id: int) -> PackageRecord | None:
    row = await conn.fetchrow(f"SELECT {_PACKAGE_COLUMNS} FROM packages p WHERE p.id = $1", package_id)
    return None if row is None else _package(row)


async def create_package(
    conn: asyncpg.Connection, *, name: str, description: str, limits: Limits, features: dict[str, Any],
    is_active: bool = True, template_id: int | None = None,
) -> PackageRecord:
    """Insert a package; PackageNameTaken if the name is in use."""
    try:
        package_id = await conn.fetchval(
            """INSERT INTO packages (template_id, name, description, max_users, max_storage_bytes,
                                     max_send_per_day, features, is_active)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) RETURNING id""",
            template_id, name, description, limits.max_users, limits.max_storage_bytes,
            limits.max_send_per_day, _stored_features(limits, features), is_active,
        )
    except asyncpg.UniqueViolationError:
        raise PackageNameTaken(f"a package named {name!r} exists already") from None
    package = await package_by_id(conn, package_id)
    assert package is not None
    return package


async def replace_package(
    conn: asyncpg.Connection, package_id: int, *, name: str, description: str, limits: Limits,
    features: dict[str, Any], is_active: bool,
) -> PackageRecord:
    """Set every field of a package (its template link stays); PackageNotFound, PackageNameTaken."""
    try:
        status = await conn.execute(
            """UPDATE packages SET name = $2, description = $3, max_users = $4, max_storage_bytes = $5,
                      max_send_per_day = $6, features = $7::jsonb, is_active = $8, updated_at = now()
                WHERE id = $1""",
            package_id, name, description, limits.max_users, limits.max_storage_bytes, limits.max_send_per_day,
            _stored_features(limits, features), is_active,
        )
    except asyncpg.UniqueViolationError:
        raise PackageNameTaken(f"a package named {name!r} exists already") from None
    package = await package_by_id(conn, package_id) if status.endswith(" 1") else None
    if package is None:
        raise PackageNotFound("package not found")
    return package


async def delete_package(conn: asyncpg.Connection, package_id: int) -> bool:
    """Delete a package; its domains are left without one (ON DELETE SET NULL)."""
    status = await conn.execute("DELETE FROM packages WHERE id = $1", package_id)
    return status.endswith(" 1")


async def assign_package(conn: asyncpg.Connection, domain_id: int, package_id: int | None) -> bool:
    """Give a domain a package (None: none); PackageNotFound for an unknown package, False for an
    unknown domain. An inactive package cannot be newly assigned."""
    if package_id is not None:
        active = await conn.fetchval("SELECT is_active FROM packages WHERE id = $1", package_id)
        if active is None:
            raise PackageNotFound("package not found")
        if not active:
            current = await conn.fetchval("SELECT package_id FROM domains WHERE id = $1", domain_id)
            if current != package_id:
                raise LimitExceeded("the package is inactive and cannot be assigned to more domains")
    status = await conn.execute(
        "UPDATE domains SET package_id = $2, updated_at = now() WHERE id = $1", domain_id, package_id
    )
    return status.endswith(" 1")


async def domain_package_id(conn: asyncpg.Connection, domain_id: int) -> int | None:
    return await conn.fetchval("SELECT package_id FROM domains WHERE id = $1", domain_id)


# --- templates -----------------------------------------------------------------------------------

_TEMPLATE_COLUMNS = ("id, name, description, max_users, max_storage_bytes, max_send_per_day, features, "
                     "created_at, updated_at")


def _template(row: asyncpg.Record) -> TemplateRecord:
    return TemplateRecord(
        id=row["id"], name=row["name"], description=row["description"], limits=_limits(row),
        features=_visible_features(row["features"]), created_at=row["created_at"], updated_at=row["updated_at"],
    )


async def list_templates(conn: asyncpg.Connection) -> list[TemplateRecord]:
    rows = await conn.fetch(f"SELECT {_TEMPLATE_COLUMNS} FROM package_templates ORDER BY name")
    return [_template(r) for r in rows]


async def template_by_id(conn: asyncpg.Connection, template_id: int) -> TemplateRecord | None:
    row = await conn.fetchrow(f"SELECT {_TEMPLATE_COLUMNS} FROM package_templates WHERE id = $1", template_id)
    return None if row is None else _template(row)


async def create_template(
    conn: asyncpg.Connection, *, name: str, description: str, limits: Limits, features: dict[str, Any]
) -> TemplateRecord:
    """Insert a template; PackageNameTaken if the name is in use."""
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO package_templates (name, description, max_users, max_storage_bytes,
                                               max_send_per_day, features)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING {_TEMPLATE_COLUMNS}""",
            name, description, limits.max_users, limits.max_storage_bytes, limits.max_send_per_day,
            _stored_features(limits, features),
        )
    except asyncpg.UniqueViolationError:
        raise PackageNameTaken(f"a package template named {name!r} exists already") from None
    return _template(row)


async def delete_template(conn: asyncpg.Connection, template_id: int) -> bool:
    """Delete a template; packages made from it keep their limits (their template_id becomes NULL)."""
    status = await conn.execute("DELETE FROM package_templates WHERE id = $1", template_id)
    return status.endswith(" 1")


async def instantiate_template(
    conn: asyncpg.Connection, template_id: int, *, name: str | None = None, description: str | None = None
) -> PackageRecord:
    """A new package with the template's limits and features (named like it unless `name` is given)."""
    template = await template_by_id(conn, template_id)
    if template is None:
        raise PackageNotFound("package template not found")
    return await create_package(
        conn, name=name or template.name,
        description=template.description if description is None else description,
        limits=template.limits, features=template.features, template_id=template.id,
    )
