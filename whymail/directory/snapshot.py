"""An immutable view of domains, users and aliases, and recipient resolution over it.

`DirectorySnapshot.resolve(address)` answers the question every delivery path asks: which local
mailboxes (and which outside addresses) does mail for this address end up in? Lookup order for an
address of a local domain: a user with that address, else an alias with that source, else the
domain's catch-all alias (source `@domain`). Aliases expand recursively (at most MAX_ALIAS_DEPTH
levels deep), every address is visited once (loops end, duplicates collapse), and the catch-all of a
domain also applies to alias destinations in that domain, as Postfix's virtual alias maps do.

The snapshot is pure and never raises from `resolve`: the Directory actor loads one with
`load_snapshot`, swaps it on a `whymail_directory` notification, and hands it to the cores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import asyncpg

from whymail.directory.addresses import catch_all_source, normalize_domain, normalize_local_part

MAX_ALIAS_DEPTH = 10

ResolutionKind = Literal["local", "unknown_user", "disabled", "remote"]


@dataclass(frozen=True, slots=True)
class LocalUser:
    """A user account as delivery sees it."""

    user_id: int
    email: str
    domain: str
    local_part: str
    quota_bytes: int  # 0: unlimited
    storage_used: int
    is_active: bool


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one address goes.

    - `local`: accept. Deliver to `users` (all active) and forward to `remote_addresses` (alias
      destinations outside our domains); either may be empty, not both.
    - `disabled`: the address is a disabled user, or an alias whose every destination is one;
      `users` names them (is_active False). Reject, as for an unknown user, or defer by policy.
    - `unknown_user`: a local domain but nobody there (or the address is not valid). Reject (550 5.1.1).
    - `remote`: the domain is not one of ours; `remote_addresses` holds the address. Relay or refuse.
    """

    kind: ResolutionKind
    users: tuple[LocalUser, ...] = ()
    remote_addresses: tuple[str, ...] = ()


_UNKNOWN = Resolution("unknown_user")


def _row_flag(row: Any, key: str) -> bool:
    """A boolean column, True when the row does not carry it (plain dicts in tests)."""
    getter = getattr(row, "get", None)
    value = getter(key, True) if getter is not None else row[key]
    return bool(value)


@dataclass(frozen=True, slots=True, eq=False)
class DirectorySnapshot:
    """Active local domains, all users by address and active aliases by source, frozen."""

    domains: frozenset[str] = frozenset()
    users: Mapping[str, LocalUser] = field(default_factory=lambda: MappingProxyType({}))
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_rows(
        cls,
        domains: Iterable[Any],
        users: Iterable[Any],
        aliases: Iterable[Any],
    ) -> DirectorySnapshot:
        """Build from rows (asyncpg Records or dicts) shaped like the queries in `load_snapshot`.

        domains: name[, is_active]; users: id, email, domain, local_part, quota_bytes, storage_used,
        is_active; aliases: source, destinations[, is_active]. Inactive domains and aliases are left
        out; disabled users are kept so that resolution can say "disabled" rather than "unknown".
        """
        domain_names = frozenset(row["name"] for row in domains if _row_flag(row, "is_active"))
        user_map = {
            row["email"]: LocalUser(
                user_id=row["id"],
                email=row["email"],
                domain=row["domain"],
                local_part=row["local_part"],
                quota_bytes=row["quota_bytes"],
                storage_used=row["storage_used"],
                is_active=bool(row["is_active"]),
            )
            for row in users
        }
        alias_map = {
            row["source"]: tuple(row["destinations"]) for row in aliases if _row_flag(row, "is_active")
        }
        return cls(domain_names, MappingProxyType(user_map), MappingProxyType(alias_map))

    def is_local_domain(self, domain: str) -> bool:
        """True when `domain` (any case, U-label or A-label) is an active domain of ours."""
        try:
            return normalize_domain(domain) in self.domains
        except ValueError:
            return False

    def user(self, address: str) -> LocalUser | None:
        """The user account with exactly this address (no alias expansion), or None."""
        try:
            local, domain = _split(address)
        except ValueError:
            return None
        return self.users.get(f"{local}@{domain}")

    def resolve(self, address: str) -> Resolution:
        """Final local recipients (and outside forwards) of `address`; never raises."""
        text = address.strip()
        local_raw, at, domain_raw = text.rpartition("@")
        if not at or not local_raw:
            return _UNKNOWN
        try:
            domain = normalize_domain(domain_raw)
        except ValueError:
            return _UNKNOWN
        if domain not in self.domains:
            # Not ours: keep the local part as written; only the receiving host may interpret it.
            return Resolution("remote", remote_addresses=(f"{local_raw}@{domain}",))
        try:
            local = normalize_local_part(local_raw)
        except ValueError:
            return _UNKNOWN
        expansion = _Expansion(self)
        expansion.visit(f"{local}@{domain}", local, domain, depth=0)
        return expansion.result()


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        raise ValueError("not an address")
    return normalize_local_part(local), normalize_domain(domain)


class _Expansion:
    """One depth-first walk through users and aliases; every address is visited at most once."""

    __slots__ = ("_snapshot", "_seen", "active", "disabled", "remote")

    def __init__(self, snapshot: DirectorySnapshot) -> None:
        self._snapshot = snapshot
        self._seen: set[str] = set()
        self.active: list[LocalUser] = []
        self.disabled: list[LocalUser] = []
        self.remote: list[str] = []

    def visit(self, address: str, local: str, domain: str, depth: int) -> None:
        if address in self._seen:
            return
        self._seen.add(address)
        snapshot = self._snapshot
        if domain not in snapshot.domains:
            self.remote.append(address)
            return
        user = snapshot.users.get(address)
        if user is not None:
            (self.active if user.is_active else self.disabled).append(user)
            return
        destinations = snapshot.aliases.get(address)
        if destinations is None:
            destinations = snapshot.aliases.get(catch_all_source(domain))
        if destinations is None or depth >= MAX_ALIAS_DEPTH:
            return
        for destination in destinations:
            self._visit_destination(destination, depth + 1)

    def _visit_destination(self, destination: str, depth: int) -> None:
        # Stored destinations are canonical already; re-checking keeps hand-edited rows harmless.
        try:
            local, domain = _split(destination)
        except ValueError:
            return
        self.visit(f"{local}@{domain}", local, domain, depth)

    def result(self) -> Resolution:
        if self.active or self.remote:
            return Resolution("local", tuple(self.active), tuple(self.remote))
        if self.disabled:
            return Resolution("disabled", tuple(self.disabled))
        return _UNKNOWN


_DOMAINS_SQL = "SELECT name, is_active FROM domains"
_USERS_SQL = """
    SELECT u.id, u.email, d.name AS domain, u.local_part, u.quota_bytes, u.storage_used, u.is_active
      FROM users u JOIN domains d ON d.id = u.domain_id"""
_ALIASES_SQL = "SELECT source, destinations, is_active FROM aliases"


async def load_snapshot(db: asyncpg.Connection | asyncpg.Pool) -> DirectorySnapshot:
    """Read the whole directory into a snapshot, in one repeatable-read transaction."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _load(conn)
    return await _load(db)


async def _load(conn: asyncpg.Connection) -> DirectorySnapshot:
    if conn.is_in_transaction():  # the caller's transaction decides what we see
        return await _fetch_all(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _fetch_all(conn)


async def _fetch_all(conn: asyncpg.Connection) -> DirectorySnapshot:
    domains = await conn.fetch(_DOMAINS_SQL)
    users = await conn.fetch(_USERS_SQL)
    aliases = await conn.fetch(_ALIASES_SQL)
    return DirectorySnapshot.from_rows(domains, users, aliases)
