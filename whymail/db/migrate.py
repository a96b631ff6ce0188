"""Numbered SQL migrations (`migrations/NNN_name.up.sql` / `.down.sql`), applied in order.

Each migration runs in its own transaction together with its bookkeeping row, and an advisory lock
serialises concurrent runners (several processes starting at once), so running twice is harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.up\.sql$")
_LOCK_KEY = 0x5759_4D41  # "WYMA": the advisory lock every migration runner takes


class MigrationError(Exception):
    """A migration file is missing or failed to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: Path
    down: Path


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied: bool


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in `directory`, ordered by version; each must have an up and a down file."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.up.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: name must be NNN_name.up.sql")
        down = path.with_name(path.name.replace(".up.sql", ".down.sql"))
        if not down.exists():
            raise MigrationError(f"{path.name}: no matching {down.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path, down))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migrations share a version number")
    return found


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    INTEGER PRIMARY KEY,
               name       TEXT NOT NULL,
               applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
    )


async def _applied(conn: asyncpg.Connection) -> set[int]:
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    return {row["version"] for row in rows}


async def status(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    """Every known migration and whether it is applied."""
    await _ensure_table(conn)
    applied = await _applied(conn)
    return [MigrationStatus(m.version, m.name, m.version in applied) for m in discover(directory)]


async def migrate_up(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration in order; return those applied."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await _ensure_table(conn)
        applied = await _applied(conn)
        for migration in discover(directory):
            if migration.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.up.read_text(encoding="utf-8"))
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.up.name}: {exc}") from exc
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return done


async def migrate_down(conn: asyncpg.Connection, steps: int = 1, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Revert the `steps` most recent applied migrations; return those reverted."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await _ensure_table(conn)
        applied = await _applied(conn)
        for migration in reversed(discover(directory)):
            if len(done) >= steps:
                break
            if migration.version not in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.down.read_text(encoding="utf-8"))
                    await conn.execute("DELETE FROM schema_migrations WHERE version = $1", migration.version)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.down.name}: {exc}") from exc
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return done
