"""First-start setup of the database: the configured local domains exist."""

from __future__ import annotations

import asyncpg


async def ensure_domains(conn: asyncpg.Connection, names: list[str]) -> list[str]:
    """Create the configured local domains that are missing; returns those created."""
    created: list[str] = []
    for name in names:
        row = await conn.fetchrow(
            "INSERT INTO domains (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING name", name
        )
        if row:
            created.append(row["name"])
    return created
