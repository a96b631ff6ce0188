"""Shared fixtures: one fresh PostgreSQL database per test session, migrated, dropped at the end."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.clamd import clamd  # noqa: F401

ADMIN_DSN = os.environ.get("WHYMAIL_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_ADDR = os.environ.get("WHYMAIL_TEST_REDIS_ADDR", "127.0.0.1:6379")


def _dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _migrate(dsn: str) -> None:
    from whymail.db.migrate import migrate_up

    conn = await asyncpg.connect(dsn)
    try:
        await migrate_up(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a migrated database created for this test session only."""
    name = f"whymail_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    dsn = _dsn_for(name)
    try:
        asyncio.run(_migrate(dsn))
        yield dsn
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture
def unique() -> str:
    """A short random token to name this test's own domain/users."""
    return uuid.uuid4().hex[:8]
