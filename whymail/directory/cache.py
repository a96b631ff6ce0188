"""A process-local Directory cache kept fresh by PostgreSQL LISTEN/NOTIFY.

Migration 001 makes every change of domains, users and aliases `pg_notify('whymail_directory')`;
the cache reloads its snapshot on each notification (coalescing bursts), and also every
`refresh_every` seconds as a safety net should a notification be lost with a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from whymail.directory.snapshot import DirectorySnapshot, load_snapshot

log = logging.getLogger(__name__)

CHANNEL = "whymail_directory"


class DirectoryCache:
    """Always holds the latest snapshot it could load; `current` never blocks."""

    def __init__(self, dsn: str, *, refresh_every: float = 30.0) -> None:
        self._dsn = dsn
        self._refresh_every = refresh_every
        self._snapshot: DirectorySnapshot | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listener: asyncpg.Connection | None = None
        self.version = 0
        self._reloaded = asyncio.Event()

    @property
    def current(self) -> DirectorySnapshot | None:
        return self._snapshot

    async def start(self, *, wait: bool = True) -> None:
        """Start loading snapshots; with `wait`, until the first one is there (raises if it can't be).

        Without `wait` the first load is retried in the background while the database is away, and
        `current` stays None until it succeeds (callers answer "try again later" meanwhile).
        """
        if wait:
            await self._reload()
        else:
            self._dirty.set()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def _reload(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            self._snapshot = await load_snapshot(conn)
        finally:
            await conn.close()
        self.version += 1
        self._reloaded.set()
        self._reloaded = asyncio.Event()

    async def wait_for_version(self, version: int, timeout: float) -> int:
        """Wait until a snapshot newer than or equal to `version` is loaded; returns the version."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.version < version:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reloaded.wait(), timeout=remaining)
        return self.version

    def _notified(self, *_args: object) -> None:
        self._dirty.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self._dsn, timeout=10)
        await self._listener.add_listener(CHANNEL, self._notified)
        # A dropped connection would silently stop notifications: wake up and reconnect at once.
        self._listener.add_termination_listener(self._notified)
        # Changes made while we were not listening would be missed: reload once now.
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), timeout=self._refresh_every)
                self._dirty.clear()
                await asyncio.sleep(0.05)  # coalesce a burst of changes into one reload
                self._dirty.clear()
                await self._reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: keep serving the last snapshot, retry
                log.warning("directory refresh failed: %s", exc)
                await self._close_listener()
                await asyncio.sleep(1.0)
