"""SMTP gateway actor: owns the inbound listener and batches deliveries towards the shards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from pathlib import Path

import ray

from whymail.directory.cache import DirectoryCache
from whymail.logs import setup_logging
from whymail.ratelimit import ConnectionCounter, ConnectionRateLimiter, TokenBuckets, redis_client
from whymail.runtime import Runtime
from whymail.sharding import rendezvous_owner
from whymail.smtp.server import InboundHandler, SessionRegistry, SmtpStats, smtp_factory
from whymail.store.batcher import ShardBatcher
from whymail.store.models import DeliveryItem, DeliveryOutcome, Recipient
from whymail.tls import server_context

log = logging.getLogger("whymail.gateway.smtp")


@ray.remote(max_restarts=-1, max_task_retries=0)
class SmtpGateway:
    """The listener is bound from `__init__`, so a restarted gateway serves again at once."""

    def __init__(self, runtime: Runtime, shard_names: list[str], namespace: str, port: int | None = None) -> None:
        setup_logging(runtime.config.logging, component="smtp-gateway")
        self._runtime = runtime
        self._shard_names = list(shard_names)
        self._namespace = namespace
        self._port = runtime.config.server.smtp.port if port is None else port
        self._usage: dict[int, int] = {}
        self._stats = SmtpStats()
        self._registry = SessionRegistry()
        self._batchers: dict[str, ShardBatcher] = {}
        self._directory = DirectoryCache(runtime.dsn)
        self._server: asyncio.base_events.Server | None = None
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> int:
        # Listen first: with PostgreSQL away, RCPT answers 451 4.3.0 until the directory loads.
        await self._directory.start(wait=False)
        for name in self._shard_names:
            handle = ray.get_actor(name, namespace=self._namespace)
            self._batchers[name] = ShardBatcher(
                lambda batch, h=handle: h.deliver_batch.remote(batch),
                on_usage=self._usage.update,
                max_in_flight=self._runtime.config.ray.calls_in_flight,
            )
        config = self._runtime.config
        limits = config.limits
        handler = InboundHandler(config, self._directory, self._deliver, self._usage, self._stats)
        factory = smtp_factory(
            config,
            handler,
            connections=ConnectionCounter(limits.max_connections_per_ip, limits.max_connections),
            command_rate=TokenBuckets(limits.commands_per_minute / 60.0, limits.commands_per_minute / 6.0),
            registry=self._registry,
            stats=self._stats,
            connect_rate=ConnectionRateLimiter(
                limits.connections_per_minute,
                redis_client(self._runtime.redis_addr, db=config.redis.db, password=config.redis.password)
                if self._runtime.redis_addr
                else None,
                prefix=f"whymail:{self._namespace}:connrate",
            ),
            tls_context=server_context(config.server.tls, Path(self._runtime.state_dir), config.server.hostname),
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory, config.server.smtp.host, self._port, reuse_port=True, backlog=1024
        )
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._port = sock.getsockname()[1]
        log.info("smtp listening on %s:%d", config.server.smtp.host, self._port)
        return self._port

    async def _deliver(self, body: bytes, recipients: list[Recipient], envelope_from: str) -> list[DeliveryOutcome]:
        by_shard: dict[str, list[DeliveryItem]] = {}
        now = time.time()
        for recipient in recipients:
            owner = rendezvous_owner(recipient.user_id, self._shard_names)
            by_shard.setdefault(owner, []).append(
                DeliveryItem(
                    delivery_id=uuid.uuid4(),
                    body_index=0,
                    recipient=recipient,
                    envelope_from=envelope_from,
                    internal_date=now,
                )
            )
        results = await asyncio.gather(
            *(self._batchers[shard].submit(body, items) for shard, items in by_shard.items())
        )
        return [outcome for outcomes in results for outcome in outcomes]

    async def ready(self) -> int:
        """Wait until the listener is bound and (for up to 10 s) the directory loaded; returns the port."""
        port = await asyncio.shield(self._started)
        await self._directory.wait_for_version(1, timeout=10.0)
        return port

    async def stats(self) -> dict:
        return {
            "sessions_open": len(self._registry.sessions),
            "sessions": self._stats.sessions,
            "accepted": self._stats.messages_accepted,
            "refused": self._stats.messages_refused,
            "recipients_refused": self._stats.recipients_refused,
            "replies": dict(self._stats.by_reply),
            "shard_calls": {n: b.calls for n, b in self._batchers.items()},
            "shard_items": {n: b.items_sent for n, b in self._batchers.items()},
            "directory_version": self._directory.version,
        }

    async def directory_version(self) -> int:
        return self._directory.version

    async def wait_directory_version(self, version: int, timeout: float = 10.0) -> int:
        """Wait until the gateway's Directory cache reached `version` (tests, operators)."""
        await asyncio.shield(self._started)
        return await self._directory.wait_for_version(version, timeout)

    async def stop(self, grace: float = 30.0) -> int:
        """Stop accepting, let sessions in flight finish (up to `grace` s); returns sessions cut off."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registry.empty.wait(), timeout=grace)
        cut = len(self._registry.sessions)
        for session in list(self._registry.sessions):
            if session.transport is not None:
                session.transport.close()
        await self._directory.stop()
        return cut
