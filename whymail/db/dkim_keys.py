"""DKIM signing keys in `dkim_keys`: stored by `whymailctl domain dkim`, used by submission."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg

log = logging.getLogger("whymail.dkim")


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str
    private_pem: str
    public_b64: str


async def store_key(
    conn: asyncpg.Connection, domain: str, selector: str, algorithm: str, private_pem: str, public_b64: str,
    *, activate: bool = False,
) -> bool:
    """Store a new key for `domain`; returns whether it signs from now on.

    It is active at once when the domain has no active key of that algorithm, or with `activate`
    (which retires the current one). Otherwise it waits for `activate_key` — a rotation must not
    switch signatures to a selector whose DNS record is not published yet.
    Raises LookupError when the domain is unknown, ValueError when the selector is taken.
    """
    async with conn.transaction():
        domain_id = await conn.fetchval("SELECT id FROM domains WHERE name = $1", domain)
        if domain_id is None:
            raise LookupError(f"domain {domain} does not exist")
        current = await conn.fetchval(
            "SELECT count(*) FROM dkim_keys WHERE domain_id = $1 AND algorithm = $2 AND is_active",
            domain_id, algorithm,
        )
        active = activate or not current
        if active and current:
            await conn.execute(
                "UPDATE dkim_keys SET is_active = FALSE WHERE domain_id = $1 AND algorithm = $2 AND is_active",
                domain_id, algorithm,
            )
        try:
            await conn.execute(
                "INSERT INTO dkim_keys (domain_id, selector, algorithm, private_key, public_key, is_active) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                domain_id, selector, algorithm, private_pem, public_b64, active,
            )
        except asyncpg.UniqueViolationError:
            raise ValueError(f"selector {selector} already exists for {domain}") from None
        # Running gateways reload their keys when the directory changes (LISTEN whymail_directory).
        await conn.execute("SELECT pg_notify('whymail_directory', 'dkim')")
    return active


async def activate_key(conn: asyncpg.Connection, domain: str, selector: str) -> str:
    """Make `selector` the signing key of its algorithm for `domain`; returns the algorithm."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT k.id, k.domain_id, k.algorithm FROM dkim_keys k JOIN domains d ON d.id = k.domain_id "
            "WHERE d.name = $1 AND k.selector = $2",
            domain, selector,
        )
        if row is None:
            raise LookupError(f"no DKIM key with selector {selector} for {domain}")
        await conn.execute(
            "UPDATE dkim_keys SET is_active = FALSE WHERE domain_id = $1 AND algorithm = $2 AND is_active",
            row["domain_id"], row["algorithm"],
        )
        await conn.execute("UPDATE dkim_keys SET is_active = TRUE WHERE id = $1", row["id"])
        await conn.execute("SELECT pg_notify('whymail_directory', 'dkim')")
    return row["algorithm"]


async def list_keys(conn: asyncpg.Connection, domain: str | None = None) -> list[dict]:
    rows = await conn.fetch(
        "SELECT d.name AS domain, k.selector, k.algorithm, k.public_key, k.is_active, k.created_at "
        "FROM dkim_keys k JOIN domains d ON d.id = k.domain_id "
        "WHERE $1::text IS NULL OR d.name = $1 ORDER BY d.name, k.created_at",
        domain,
    )
    return [dict(row) for row in rows]


async def active_keys(conn: asyncpg.Connection) -> dict[str, list[DkimKey]]:
    rows = await conn.fetch(
        "SELECT d.name AS domain, k.selector, k.algorithm, k.private_key, k.public_key "
        "FROM dkim_keys k JOIN domains d ON d.id = k.domain_id WHERE k.is_active AND d.is_active "
        "ORDER BY k.algorithm DESC"  # rsa before ed25519 (RFC 8463 §3: RSA for verifiers that lack Ed25519)
    )
    keys: dict[str, list[DkimKey]] = {}
    for row in rows:
        keys.setdefault(row["domain"], []).append(
            DkimKey(row["domain"], row["selector"], row["algorithm"], row["private_key"], row["public_key"])
        )
    return keys


class DkimKeyCache:
    """Active keys per domain, reloaded at most every `ttl` seconds (a new key signs within a minute)."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = 60.0, version=None) -> None:
        self._pool = pool
        self._ttl = ttl
        self._version = version  # () -> int: the directory version; a change means "reload now"
        self._seen_version = -1
        self._keys: dict[str, list[DkimKey]] = {}
        self._loaded = 0.0
        self._lock = asyncio.Lock()

    async def keys_for(self, domain: str) -> list[DkimKey]:
        if self._version is not None and self._version() != self._seen_version:
            self._seen_version = self._version()
            self._loaded = 0.0
        if time.monotonic() - self._loaded > self._ttl:
            async with self._lock:
                if time.monotonic() - self._loaded > self._ttl:
                    try:
                        async with self._pool.acquire() as conn:
                            self._keys = await active_keys(conn)
                        self._loaded = time.monotonic()
                    except (OSError, asyncpg.PostgresError) as exc:
                        log.warning("dkim keys not reloaded: %r", exc)
        return self._keys.get(domain.lower(), [])

    def invalidate(self) -> None:
        self._loaded = 0.0
