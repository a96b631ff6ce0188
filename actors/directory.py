"""Directory actor: a cluster-wide cached view of domains, users and aliases for non-hot paths.

Gateways keep their own in-process `DirectoryCache` for per-RCPT lookups (no Ray call per RCPT);
this actor serves everything else (API, CLI-facing checks) from the same kind of cache.
"""

from __future__ import annotations

import asyncio

import ray

from whymail.directory.cache import DirectoryCache
from whymail.logs import setup_logging
from whymail.runtime import Runtime


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Directory:
    def __init__(self, runtime: Runtime) -> None:
        setup_logging(runtime.config.logging, component="directory")
        self._cache = DirectoryCache(runtime.dsn)
        self._started = asyncio.get_event_loop().create_task(self._cache.start())

    async def ready(self) -> int:
        await asyncio.shield(self._started)
        return self._cache.version

    async def version(self) -> int:
        """How many snapshots were loaded: grows by one after each directory change."""
        await asyncio.shield(self._started)
        return self._cache.version

    async def resolve(self, address: str) -> dict:
        """How `address` resolves right now (kind, local user ids, remote addresses)."""
        await asyncio.shield(self._started)
        snapshot = self._cache.current
        assert snapshot is not None
        resolution = snapshot.resolve(address)
        return {
            "kind": resolution.kind,
            "user_ids": [u.user_id for u in resolution.users],
            "remote": list(resolution.remote_addresses),
        }
