"""Migrations against a real PostgreSQL: the full schema exists, and up/down/up round-trips cleanly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import ADMIN_DSN
from whymail.db.migrate import discover, migrate_down, migrate_up, status

CORE_TABLES = {"domains", "users", "aliases", "mailboxes", "messages", "expunged"}
FEATURE_TABLES = {
    "outbound_queue",
    "notifications",
    "notification_preferences",
    "attachments",
    "drafts",
    "email_rules",
    "signatures",
    "read_receipts",
    "saved_searches",
    "packages",
    "package_templates",
    "system_config",
    "audit_logs",
    "api_tokens",
    "refresh_tokens",
    "login_failures",
    "dkim_keys",
}


async def _public_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {row["table_name"] for row in rows}


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def fresh_conn() -> AsyncIterator[asyncpg.Connection]:
    """A connection to an empty database created for this test only."""
    name = f"whymail_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = ADMIN_DSN.rpartition("/")
    connection = await asyncpg.connect(f"{base}/{name}")
    try:
        yield connection
    finally:
        await connection.close()
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_session_database_has_every_table(conn: asyncpg.Connection) -> None:
    assert await _public_tables(conn) >= CORE_TABLES | FEATURE_TABLES | {"schema_migrations"}


async def test_session_database_is_fully_migrated(conn: asyncpg.Connection) -> None:
    assert all(s.applied for s in await status(conn))


async def test_messages_have_generated_search_vector_with_gin_index(conn: asyncpg.Connection) -> None:
    generated = await conn.fetchval(
        """SELECT is_generated FROM information_schema.columns
           WHERE table_name = 'messages' AND column_name = 'search_vector'"""
    )
    assert generated == "ALWAYS"
    index = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_search'")
    assert "USING gin (search_vector)" in index


async def test_domains_package_id_references_packages(conn: asyncpg.Connection) -> None:
    target = await conn.fetchval(
        """SELECT confrelid::regclass::text FROM pg_constraint
           WHERE conname = 'domains_package_id_fkey' AND contype = 'f'"""
    )
    assert target == "packages"


async def test_up_is_idempotent_and_down_then_up_round_trips(fresh_conn: asyncpg.Connection) -> None:
    migrations = discover()
    versions = [m.version for m in migrations]

    applied = await migrate_up(fresh_conn)
    assert [m.version for m in applied] == versions
    assert await migrate_up(fresh_conn) == []
    assert all(s.applied for s in await status(fresh_conn))
    assert await _public_tables(fresh_conn) >= CORE_TABLES | FEATURE_TABLES

    reverted = await migrate_down(fresh_conn, steps=100)
    assert [m.version for m in reverted] == list(reversed(versions))
    assert not any(s.applied for s in await status(fresh_conn))
    assert await _public_tables(fresh_conn) == {"schema_migrations"}
    leftover_functions = await fresh_conn.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
    )
    assert leftover_functions == []

    reapplied = await migrate_up(fresh_conn)
    assert [m.version for m in reapplied] == versions
    assert all(s.applied for s in await status(fresh_conn))
    assert await _public_tables(fresh_conn) >= CORE_TABLES | FEATURE_TABLES


async def test_down_one_step_reverts_only_the_latest(fresh_conn: asyncpg.Connection) -> None:
    await migrate_up(fresh_conn)
    latest = discover()[-1]

    reverted = await migrate_down(fresh_conn, steps=1)

    assert [m.version for m in reverted] == [latest.version]
    applied = {s.version: s.applied for s in await status(fresh_conn)}
    assert applied.pop(latest.version) is False
    assert all(applied.values())
