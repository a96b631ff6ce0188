"""asyncpg connection pools with the codecs WhyMail relies on."""

from __future__ import annotations

import asyncpg


async def _light_reset(conn: asyncpg.Connection) -> None:
    """On release, only roll back an unfinished transaction.

    asyncpg's default reset (RESET ALL, UNLISTEN *, advisory unlock, CLOSE ALL) costs a round trip on
    every release; WhyMail never leaves session state on pooled connections (LISTEN and advisory locks
    use dedicated connections), so rolling back is all that is needed.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool to `dsn`; fails fast (10 s) if PostgreSQL is unreachable."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=10, command_timeout=60, reset=_light_reset
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection, for short CLI operations."""
    return await asyncpg.connect(dsn, timeout=10)
