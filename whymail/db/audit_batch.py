"""Audit rows written in batches, for paths too hot to wait for one INSERT each (SMTP submission).

`add` never waits and never fails; a background task (`run`) writes what gathered with one
`executemany` per `interval`. Rows are best effort like the rest of the audit log: when the database
is away they are logged as lost, and past `max_pending` the oldest are dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from dataclasses import dataclass, field

import asyncpg
import orjson

from whymail.flushing import GatheringFlusher

log = logging.getLogger("whymail.audit")

_INSERT = """INSERT INTO audit_logs (actor_user_id, actor_email, actor_ip, action, target_type, target_id, details)
             VALUES ($1, $2, $3::inet, $4, $5, $6, $7::jsonb)"""


@dataclass(frozen=True, slots=True)
class AuditRow:
    action: str
    actor_user_id: int | None = None
    actor_email: str | None = None
    actor_ip: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    details: dict = field(default_factory=dict)


def _inet(ip: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(ip)) if ip else None
    except ValueError:
        return None


class AuditBatcher(GatheringFlusher):
    """Buffers audit rows and writes them in batches; see the module docstring."""

    _what = "audit"

    def __init__(
        self, pool: asyncpg.Pool, *, interval: float = 0.2, max_batch: int = 1000, max_pending: int = 50000,
        timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._max_batch = max_batch
        self._timeout = timeout
        self._pending: deque[AuditRow] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self.written = 0
        self.dropped = 0

    def add(self, row: AuditRow) -> None:
        """Queue a row for the next batch; never blocks."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(row)
        self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            args = [(r.actor_user_id, r.actor_email, _inet(r.actor_ip), r.action, r.target_type, r.target_id,
                     orjson.dumps(r.details).decode()) for r in batch]
            try:
                async with self._pool.acquire() as conn:
                    await asyncio.wait_for(conn.executemany(_INSERT, args), self._timeout)
                self.written += len(batch)
            except Exception as exc:
                self.dropped += len(batch)
                log.error("%d audit rows (%s, ...) not written: %r", len(batch), batch[0].action, exc)
