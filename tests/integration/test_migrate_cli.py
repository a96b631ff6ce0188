"""`whymail migrate up|down|status` as an operator runs it, against a database of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg

from tests.conftest import ADMIN_DSN, _dsn_for


def _whymail(*args: str, dsn: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYMAIL")}
    env["WHYMAIL_DB_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "whymail.cli.main", "migrate", *args], capture_output=True, text=True,
        env=env, timeout=120,
    )


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_migrate_up_status_down_round_trip() -> None:
    name = f"whymail_cli_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    dsn = _dsn_for(name)
    try:
        status = _whymail("status", dsn=dsn)
        assert status.returncode == 0, status.stderr
        assert "001_core" in status.stdout and "pending" in status.stdout and "applied" not in status.stdout

        up = _whymail("up", dsn=dsn)
        assert up.returncode == 0, up.stderr
        assert "applied 001_core" in up.stdout and "applied 002_mail_features" in up.stdout
        assert "applied 003_starred" in up.stdout and "applied 004_outbound" in up.stdout
        assert "applied 005_api_indexes" in up.stdout

        again = _whymail("up", dsn=dsn)
        assert again.returncode == 0 and "schema is up to date" in again.stdout

        down = _whymail("down", dsn=dsn)
        assert down.returncode == 0 and "reverted 005_api_indexes" in down.stdout
        status = _whymail("status", dsn=dsn)
        lines = dict(line.split() for line in status.stdout.strip().splitlines())
        assert lines == {
            "001_core": "applied", "002_mail_features": "applied", "003_starred": "applied",
            "004_outbound": "applied", "005_api_indexes": "pending",
        }
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_migrate_against_an_unreachable_database_says_so_in_one_line() -> None:
    result = _whymail("status", dsn="postgresql://postgres@127.0.0.1:1/nothing")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("whymail: cannot reach the database")
    assert "Traceback" not in result.stderr
