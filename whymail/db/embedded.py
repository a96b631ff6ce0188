"""Embedded PostgreSQL (pgserver) living in the state directory, for `whymail serve` without a DSN."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_DB = "whymail"


def embedded_dsn(state_dir: Path, *, stop_on_exit: bool) -> str:
    """Start (or attach to) the embedded PostgreSQL in `<state_dir>/pgdata` and return a DSN for it.

    The server process is shared: `whymailctl` beside a running `whymail serve` attaches to the same
    one. Only the process that passes `stop_on_exit=True` (the server) stops it at exit.
    """
    import pgserver  # imported lazily: only the embedded mode needs it

    pgdata = state_dir / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop" if stop_on_exit else None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DB}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DB};")
        log.info("created embedded database in %s", pgdata)
    # pgserver listens on a Unix socket inside pgdata; asyncpg takes it as host=<dir>.
    return f"postgresql://postgres@/{EMBEDDED_DB}?host={pgdata}"


def resolve_dsn(configured: str, state_dir: Path, *, stop_on_exit: bool = False) -> str:
    """The configured DSN, or the embedded server's when none is configured."""
    if configured:
        return configured
    return embedded_dsn(state_dir, stop_on_exit=stop_on_exit)
