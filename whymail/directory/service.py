"""Directory operations: domains, users and aliases, shared by `whymailctl` and the REST API.

Every function takes an asyncpg Connection (or a Pool, from which it borrows one), validates and
canonicalises its input (see `addresses`), and raises a `DirectoryError` with a message meant for
a person. Running servers learn about changes from the `whymail_directory` NOTIFY triggers of
migration 001; nothing here has to announce anything.

Catch-all: an alias whose source is `@domain` receives mail for every address of the domain that
is neither a user nor an alias, and may have several destinations like any alias. The alias table
is the only place it lives: the `domains.catch_all` column is neither written nor read.

Deleting a user or a domain removes its rows (mailboxes and message rows cascade); the Maildir
files under `storage.maildir_root` are left for the operator to archive or remove.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from whymail.directory.addresses import (
    normalize_address,
    normalize_alias_source,
    normalize_domain,
    split_address,
)

ROLES = ("user", "admin", "owner")

# (name, special_use) of the mailboxes every new user starts with (RFC 6154 special-use flags).
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Archive", "\\Archive"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)

MAX_ALIAS_DESTINATIONS = 1000
MAX_DISPLAY_NAME = 256
UIDVALIDITY_MAX = 2**32 - 1  # RFC 3501 §2.3.1.1: a non-zero 32-bit number
_UIDVALIDITY_LOCK = 0x5759_5556  # "WYUV": serialises UIDVALIDITY allocation across processes


class DirectoryError(ValueError):
    """A directory operation was refused; `str(error)` is a message for a person."""


class NotFound(DirectoryError):
    """The named domain, user or alias does not exist."""


class AlreadyExists(DirectoryError):
    """The name is already taken (by the same kind of object or one that would clash with it)."""


class InvalidInput(DirectoryError):
    """An address, domain name, role, quota or other argument is not acceptable."""


class Conflict(DirectoryError):
    """The operation is valid but the current state forbids it (users left in a domain, limits)."""


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    is_active: bool
    max_users: int  # 0: unlimited
    user_count: int
    alias_count: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    email: str
    local_part: str
    domain: str
    display_name: str
    role: str
    is_active: bool
    quota_bytes: int  # 0: unlimited
    storage_used: int
    message_count: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AliasInfo:
    source: str  # `local@domain`, or `@domain` for the catch-all
    domain: str
    destinations: tuple[str, ...]
    is_active: bool
    created_at: datetime

    @property
    def is_catch_all(self) -> bool:
        return self.source.startswith("@")


Db = asyncpg.Connection | asyncpg.Pool


@asynccontextmanager
async def _connection(db: Db) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def _domain(name: str) -> str:
    try:
        return normalize_domain(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _address(address: str) -> tuple[str, str, str]:
    """(email, local part, domain), canonical."""
    try:
        local, domain = split_address(address)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return f"{local}@{domain}", local, domain


def _quota(quota_bytes: int) -> int:
    if isinstance(quota_bytes, bool) or not isinstance(quota_bytes, int) or quota_bytes < 0:
        raise InvalidInput(f"quota must be a whole number of bytes, 0 or more (got {quota_bytes!r})")
    if quota_bytes > 2**63 - 1:
        raise InvalidInput("quota is too large")
    return quota_bytes


def _display_name(name: str) -> str:
    text = name.strip()
    if len(text) > MAX_DISPLAY_NAME:
        raise InvalidInput(f"display name is longer than {MAX_DISPLAY_NAME} characters")
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise InvalidInput("display name must not contain control characters (such as line breaks)")
    return text


# --- domains -----------------------------------------------------------------------------------

_DOMAIN_COLUMNS = """
    d.name, d.is_active, d.max_users, d.created_at,
    (SELECT count(*) FROM users u WHERE u.domain_id = d.id) AS user_count,
    (SELECT count(*) FROM aliases a WHERE a.domain_id = d.id) AS alias_count"""


def _domain_info(row: asyncpg.Record) -> DomainInfo:
    return DomainInfo(
        name=row["name"],
        is_active=row["is_active"],
        max_users=row["max_users"],
        user_count=row["user_count"],
        alias_count=row["alias_count"],
        created_at=row["created_at"],
    )


async def add_domain(db: Db, name: str) -> DomainInfo:
    """Create the local domain `name` (canonicalised); AlreadyExists if it is there already."""
    domain = _domain(name)
    async with _connection(db) as conn:
        row = await conn.fetchrow(
            """INSERT INTO domains (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
               RETURNING name, is_active, max_users, created_at, 0::bigint AS user_count,
                         0::bigint AS alias_count""",
            domain,
        )
    if row is None:
        raise AlreadyExists(f"domain {domain} already exists")
    return _domain_info(row)


async def get_domain(db: Db, name: str) -> DomainInfo:
    """The domain `name`; NotFound if it does not exist."""
    domain = _domain(name)
    async with _connection(db) as conn:
        row = await conn.fetchrow(f"SELECT {_DOMAIN_COLUMNS} FROM domains d WHERE d.name = $1", domain)
    if row is None:
        raise NotFound(f"domain {domain} does not exist")
    return _domain_info(row)


async def list_domains(db: Db) -> list[DomainInfo]:
    """Every domain, by name, with its user and alias counts."""
    async with _connection(db) as conn:
        rows = await conn.fetch(f"SELECT {_DOMAIN_COLUMNS} FROM domains d ORDER BY d.name")
    return [_domain_info(row) for row in rows]


async def delete_domain(db: Db, name: str, *, force: bool = False) -> DomainInfo:
    """Delete a domain and its aliases; Conflict if it still has users, unless `force` (then they go too)."""
    domain = _domain(name)
    async with _connection(db) as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT d.id, {_DOMAIN_COLUMNS} FROM domains d WHERE d.name = $1 FOR UPDATE", domain
        )
        if row is None:
            raise NotFound(f"domain {domain} does not exist")
        info = _domain_info(row)
        if info.user_count and not force:
            users = "user" if info.user_count == 1 else "users"
            raise Conflict(f"domain {domain} still has {info.user_count} {users}; delete them first")
        await conn.execute("DELETE FROM domains WHERE id = $1", row["id"])
    return info


# --- users -------------------------------------------------------------------------------------

_USER_COLUMNS = """
    u.id, u.email, u.local_part, d.name AS domain, u.display_name, u.role, u.is_active,
    u.quota_bytes, u.storage_used, u.message_count, u.created_at"""


def _user_info(row: asyncpg.Record) -> UserInfo:
    return UserInfo(
        id=row["id"],
        email=row["email"],
        local_part=row["local_part"],
        domain=row["domain"],
        display_name=row["display_name"],
        role=row["role"],
        is_active=row["is_active"],
        quota_bytes=row["quota_bytes"],
        storage_used=row["storage_used"],
        message_count=row["message_count"],
        created_at=row["created_at"],
    )


async def allocate_uidvalidities(conn: asyncpg.Connection, count: int) -> list[int]:
    """`count` fresh UIDVALIDITY values (RFC 3501 §2.3.1.1); call inside the transaction that uses them.

    Values are time-based like Dovecot's (seconds since the epoch, which fits 32 bits until 2106) but
    always above every value in use, so they are unique and increasing even for mailboxes created in
    the same second, and a mailbox re-created under an old name never gets its old UIDVALIDITY back
    while any newer mailbox exists. A transaction-scoped advisory lock serialises concurrent callers.
    """
    if count <= 0:
        return []
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _UIDVALIDITY_LOCK)
    highest = await conn.fetchval("SELECT coalesce(max(uidvalidity), 0) FROM mailboxes")
    first = max(int(time.time()), highest + 1)
    if first + count - 1 > UIDVALIDITY_MAX:
        raise Conflict("no UIDVALIDITY values are left below 2^32")
    return list(range(first, first + count))


async def add_user(
    db: Db,
    email: str,
    password_hash: str,
    *,
    display_name: str = "",
    quota_bytes: int,
    role: str = "user",
) -> UserInfo:
    """Create a user in an existing domain with its default mailboxes, in one transaction."""
    address, local, domain = _address(email)
    if "/" in local or local.startswith("."):
        # Valid in an address, but a mailbox's local part names its Maildir directory.
        raise InvalidInput(f"{address}: a mailbox's local part may not contain '/' or start with '.'")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    if not password_hash:
        raise InvalidInput("password hash is empty")
    quota = _quota(quota_bytes)
    name = _display_name(display_name)
    async with _connection(db) as conn, conn.transaction():
        # NO KEY UPDATE: serialises user creation per domain (for max_users) without blocking the
        # foreign-key checks of other writers.
        domain_row = await conn.fetchrow(
            "SELECT id, max_users FROM domains WHERE name = $1 FOR NO KEY UPDATE", domain
        )
        if domain_row is None:
            raise NotFound(f"domain {domain} does not exist")
        if await conn.fetchval("SELECT 1 FROM aliases WHERE source = $1", address):
            raise AlreadyExists(f"{address} is already an alias")
        if domain_row["max_users"]:
            count = await conn.fetchval("SELECT count(*) FROM users WHERE domain_id = $1", domain_row["id"])
            if count >= domain_row["max_users"]:
                raise Conflict(f"domain {domain} already has its maximum of {domain_row['max_users']} users")
        try:
            user_id = await conn.fetchval(
                """INSERT INTO users (domain_id, local_part, email, password_hash, display_name, role, quota_bytes)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT DO NOTHING RETURNING id""",
                domain_row["id"],
                local,
                address,
                password_hash,
                name,
                role,
                quota,
            )
        except asyncpg.CheckViolationError as exc:  # the schema's own limits, e.g. on local_part
            raise InvalidInput(f"{address} is not acceptable: {exc.constraint_name or exc}") from None
        if user_id is None:
            raise AlreadyExists(f"user {address} already exists")
        uidvalidities = await allocate_uidvalidities(conn, len(DEFAULT_MAILBOXES))
        await conn.executemany(
            "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity) VALUES ($1, $2, $3, $4)",
            [
                (user_id, mailbox, special_use, uidvalidity)
                for (mailbox, special_use), uidvalidity in zip(DEFAULT_MAILBOXES, uidvalidities, strict=True)
            ],
        )
        row = await conn.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
            user_id,
        )
    return _user_info(row)


async def get_user(db: Db, email: str) -> UserInfo:
    """The user with address `email`; NotFound if there is none."""
    address, _, _ = _address(email)
    async with _connection(db) as conn:
        row = await conn.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.email = $1",
            address,
        )
    if row is None:
        raise NotFound(f"user {address} does not exist")
    return _user_info(row)


async def _existing_domain(conn: asyncpg.Connection, domain: str) -> str:
    """The canonical name of `domain`; NotFound if it is not in the directory."""
    name = _domain(domain)
    if not await conn.fetchval("SELECT 1 FROM domains WHERE name = $1", name):
        raise NotFound(f"domain {name} does not exist")
    return name


async def list_users(db: Db, domain: str | None = None) -> list[UserInfo]:
    """Every user (of `domain` only, when given; NotFound if that domain does not exist), by address."""
    async with _connection(db) as conn:
        if domain is None:
            rows = await conn.fetch(
                f"SELECT {_USER_COLUMNS} FROM users u JOIN domains d ON d.id = u.domain_id ORDER BY u.email"
            )
        else:
            name = await _existing_domain(conn, domain)
            rows = await conn.fetch(
                f"""SELECT {_USER_COLUMNS} FROM users u JOIN domains d ON d.id = u.domain_id
                     WHERE d.name = $1 ORDER BY u.email""",
                name,
            )
    return [_user_info(row) for row in rows]


async def _update_user(db: Db, email: str, assignments: str, *values: object) -> UserInfo:
    address, _, _ = _address(email)
    async with _connection(db) as conn:
        row = await conn.fetchrow(
            f"""WITH changed AS (
                    UPDATE users SET {assignments}, updated_at = now() WHERE email = $1 RETURNING *)
                SELECT {_USER_COLUMNS} FROM changed u JOIN domains d ON d.id = u.domain_id""",
            address,
            *values,
        )
    if row is None:
        raise NotFound(f"user {address} does not exist")
    return _user_info(row)


async def delete_user(db: Db, email: str) -> UserInfo:
    """Delete a user with its mailboxes and message rows; return what it was."""
    address, _, _ = _address(email)
    async with _connection(db) as conn:
        row = await conn.fetchrow(
            f"""WITH gone AS (DELETE FROM users WHERE email = $1 RETURNING *)
                SELECT {_USER_COLUMNS} FROM gone u JOIN domains d ON d.id = u.domain_id""",
            address,
        )
    if row is None:
        raise NotFound(f"user {address} does not exist")
    return _user_info(row)


async def set_password(db: Db, email: str, password_hash: str) -> UserInfo:
    """Replace the user's password hash."""
    if not password_hash:
        raise InvalidInput("password hash is empty")
    return await _update_user(db, email, "password_hash = $2", password_hash)


async def set_quota(db: Db, email: str, quota_bytes: int) -> UserInfo:
    """Set the user's quota in bytes (0: unlimited)."""
    return await _update_user(db, email, "quota_bytes = $2", _quota(quota_bytes))


async def set_enabled(db: Db, email: str, enabled: bool) -> UserInfo:
    """Enable or disable the user: a disabled user can neither log in nor receive mail."""
    return await _update_user(db, email, "is_active = $2", bool(enabled))


# --- aliases -----------------------------------------------------------------------------------

_ALIAS_COLUMNS = "a.source, d.name AS domain, a.destinations, a.is_active, a.created_at"


def _alias_info(row: asyncpg.Record) -> AliasInfo:
    return AliasInfo(
        source=row["source"],
        domain=row["domain"],
        destinations=tuple(row["destinations"]),
        is_active=row["is_active"],
        created_at=row["created_at"],
    )


def _alias_source(source: str) -> tuple[str, str]:
    try:
        return normalize_alias_source(source)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _destinations(source: str, destinations: Sequence[str]) -> list[str]:
    if isinstance(destinations, str):
        destinations = [destinations]
    result: list[str] = []
    for destination in destinations:
        try:
            address = normalize_address(destination)
        except ValueError as exc:
            raise InvalidInput(f"destination {exc}") from None
        if address == source:
            raise InvalidInput(f"alias {source} cannot forward to itself")
        if address not in result:
            result.append(address)
    if not result:
        raise InvalidInput(f"alias {source} needs at least one destination")
    if len(result) > MAX_ALIAS_DESTINATIONS:
        raise InvalidInput(f"an alias may have at most {MAX_ALIAS_DESTINATIONS} destinations")
    return result


async def add_alias(db: Db, source: str, destinations: Sequence[str]) -> AliasInfo:
    """Create an alias `source` -> `destinations` (`@domain` as source makes the catch-all).

    The source's domain must exist and the source must not be a user; destinations may be local
    or remote, and may name addresses that do not exist yet.
    """
    canonical, domain = _alias_source(source)
    targets = _destinations(canonical, destinations)
    async with _connection(db) as conn, conn.transaction():
        domain_id = await conn.fetchval("SELECT id FROM domains WHERE name = $1 FOR KEY SHARE", domain)
        if domain_id is None:
            raise NotFound(f"domain {domain} does not exist")
        if await conn.fetchval("SELECT 1 FROM users WHERE email = $1", canonical):
            raise AlreadyExists(f"{canonical} is already a user")
        row = await conn.fetchrow(
            f"""WITH added AS (
                    INSERT INTO aliases (domain_id, source, destinations) VALUES ($1, $2, $3)
                    ON CONFLICT (source) DO NOTHING RETURNING *)
                SELECT {_ALIAS_COLUMNS} FROM added a JOIN domains d ON d.id = a.domain_id""",
            domain_id,
            canonical,
            targets,
        )
    if row is None:
        what = "catch-all" if canonical.startswith("@") else "alias"
        raise AlreadyExists(f"{what} {canonical} already exists")
    return _alias_info(row)


async def list_aliases(db: Db, domain: str | None = None) -> list[AliasInfo]:
    """Every alias (of `domain` only, when given; NotFound if that domain does not exist), by source."""
    async with _connection(db) as conn:
        if domain is None:
            rows = await conn.fetch(
                f"SELECT {_ALIAS_COLUMNS} FROM aliases a JOIN domains d ON d.id = a.domain_id "
                "ORDER BY d.name, a.source"
            )
        else:
            name = await _existing_domain(conn, domain)
            rows = await conn.fetch(
                f"""SELECT {_ALIAS_COLUMNS} FROM aliases a JOIN domains d ON d.id = a.domain_id
                     WHERE d.name = $1 ORDER BY a.source""",
                name,
            )
    return [_alias_info(row) for row in rows]


async def delete_alias(db: Db, source: str) -> AliasInfo:
    """Delete the alias (or catch-all, `@domain`) `source`; return what it was."""
    canonical, _ = _alias_source(source)
    async with _connection(db) as conn:
        row = await conn.fetchrow(
            f"""WITH gone AS (DELETE FROM aliases WHERE source = $1 RETURNING *)
                SELECT {_ALIAS_COLUMNS} FROM gone a JOIN domains d ON d.id = a.domain_id""",
            canonical,
        )
    if row is None:
        what = "catch-all" if canonical.startswith("@") else "alias"
        raise NotFound(f"{what} {canonical} does not exist")
    return _alias_info(row)
