"""asyncpg connection pools with the codecs WhyMail relies on."""

from __future__ import annotations

import asyncpg


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool to `dsn`; fails fast (10 s) if PostgreSQL is unreachable."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=10, command_timeout=60
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection, for short CLI operations."""
    return await asyncpg.connect(dsn, timeout=10)
