"""SMTP gateway actor: owns the inbound listener and batches deliveries towards the shards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import ray

from whymail import antivirus
from whymail.auth.lockout import GuardedAuthenticator, LoginGuard
from whymail.db.audit import LoginAudit
from whymail.db.audit_batch import AuditBatcher, AuditRow
from whymail.db.dkim_keys import DkimKeyCache
from whymail.db.pool import create_pool
from whymail.directory.cache import DirectoryCache
from whymail.dnsresolve import DnsResolver
from whymail.imap.pg_storage import PgAuthenticator
from whymail.logs import setup_logging
from whymail.queue import store as queue_store
from whymail.queue.spool import Spool
from whymail.queue.submit import SubmitBatcher
from whymail.ratelimit import ConnectionCounter, ConnectionRateLimiter, TokenBuckets, redis_client
from whymail.runtime import Runtime
from whymail.smtp.inspect import MessageInspector
from whymail.smtp.server import InboundHandler, SessionRegistry, SmtpStats, smtp_factory
from whymail.smtp.submission import ServiceUnavailable, SubmissionHandler
from whymail.store.models import DeliveryItem, DeliveryOutcome, Recipient
from whymail.store.router import ShardRouter
from whymail.tls import server_context

log = logging.getLogger("whymail.gateway.smtp")

SENT_COUNT_TTL = 30.0


@ray.remote(max_restarts=-1, max_task_retries=0)
class SmtpGateway:
    """The listeners are bound from `__init__`, so a restarted gateway serves again at once.

    Three listeners share one event loop: the inbound MTA (port 25), submission with STARTTLS (587)
    and submission with implicit TLS (465). Inbound mail goes straight to the owning shards;
    submitted mail gets its Sent copy from the sender's shard and goes to the outbound queue.
    """

    def __init__(
        self,
        runtime: Runtime,
        shard_names: list[str],
        namespace: str,
        port: int | None = None,
        submission_port: int | None = None,
        smtps_port: int | None = None,
    ) -> None:
        setup_logging(runtime.config.logging, component="smtp-gateway")
        self._runtime = runtime
        self._shard_names = list(shard_names)
        self._namespace = namespace
        smtp = runtime.config.server.smtp
        self._ports = [
            smtp.port if port is None else port,
            smtp.submission_port if submission_port is None else submission_port,
            smtp.smtps_port if smtps_port is None else smtps_port,
        ]
        self._usage: dict[int, int] = {}
        self._sent_counts: dict[int, tuple[int, float]] = {}  # user id -> (sent in 24 h, when counted)
        self._stats = SmtpStats()
        self._registry = SessionRegistry()
        self._router: ShardRouter | None = None
        self._pool: asyncpg.Pool | None = None
        self._authenticator: GuardedAuthenticator | None = None
        self._submit_batcher: SubmitBatcher | None = None
        self._audit: AuditBatcher | None = None  # one row per submitted message, written in batches
        self._audit_task: asyncio.Task | None = None
        self._directory = DirectoryCache(runtime.dsn)
        self._servers: list[asyncio.base_events.Server] = []
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="smtp-io")
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> list[int]:
        # Listen first: with PostgreSQL away, RCPT answers 451 4.3.0 until the directory loads.
        await self._directory.start(wait=False)
        config = self._runtime.config
        handles = {name: ray.get_actor(name, namespace=self._namespace) for name in self._shard_names}
        self._router = ShardRouter(
            self._shard_names,
            lambda name: (lambda batch, h=handles[name]: h.deliver_batch.remote(batch)),
            on_usage=self._usage.update,
            max_in_flight=config.ray.calls_in_flight,
        )
        redis = (
            redis_client(self._runtime.redis_addr, db=config.redis.db, password=config.redis.password)
            if self._runtime.redis_addr
            else None
        )
        self._spool = Spool(self._runtime.maildir_root, fsync=config.storage.fsync)
        inspector = MessageInspector(
            config,
            scanner=antivirus.from_config(config.plugins.antivirus),
            resolver=DnsResolver.from_config(config.dns),
            dkim_keys=None,  # set once PostgreSQL is reachable (`_connect_database`)
        )
        self._inspector = inspector
        limits = config.limits
        auth = config.auth
        guard = LoginGuard(
            max_per_ip=auth.max_failures_per_ip,
            max_per_account=auth.max_failures_per_account,
            window=auth.failure_window,
            lockout=auth.lockout_seconds,
            redis_client=redis,
            prefix=f"whymail:{self._namespace}:login",  # the same counters as IMAP
        )

        inbound = InboundHandler(
            config, self._directory, self._deliver, self._usage, self._stats,
            inspector=inspector, forward=self._forward,
        )
        submission = SubmissionHandler(
            config, self._directory,
            authenticate=self._authenticate, sent_today=self._sent_today, queue_message=self._queue,
            store_copy=self._store_copy,
            transform=lambda message, _sender: inspector.submission(message),
            usage=self._usage, stats=self._stats,
        )
        common = {
            "connections": ConnectionCounter(limits.max_connections_per_ip, limits.max_connections),
            "command_rate": TokenBuckets(limits.commands_per_minute / 60.0, limits.commands_per_minute / 6.0),
            "registry": self._registry,
            "stats": self._stats,
            "connect_rate": ConnectionRateLimiter(
                limits.connections_per_minute, redis, prefix=f"whymail:{self._namespace}:connrate"
            ),
            "tls_context": server_context(config.server.tls, Path(self._runtime.state_dir), config.server.hostname),
        }
        loop = asyncio.get_running_loop()
        host = config.server.smtp.host
        listeners = [
            (smtp_factory(config, inbound, **common), None),
            (smtp_factory(config, submission, submission=True, **common), None),
            (smtp_factory(config, submission, submission=True, implicit_tls=True, **common), common["tls_context"]),
        ]
        for index, (factory, ssl_context) in enumerate(listeners):
            server = await loop.create_server(
                factory, host, self._ports[index], reuse_port=True, backlog=1024, ssl=ssl_context,
            )
            sock = server.sockets[0]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ports[index] = sock.getsockname()[1]
            self._servers.append(server)
        log.info("smtp listening on %s: %d (MTA), %d (submission), %d (submissions)", host, *self._ports)
        # Listening first: with PostgreSQL away, logins answer 454 and submissions 451 until it is back.
        self._database = loop.create_task(self._connect_database(guard))
        return list(self._ports)

    async def _connect_database(self, guard: LoginGuard) -> None:
        config = self._runtime.config
        while True:
            try:
                pool = await create_pool(self._runtime.dsn, min_size=1, max_size=config.db.max_pool)
                break
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("database unreachable (%r); retrying in 2 s", exc)
                await asyncio.sleep(2.0)
        self._authenticator = GuardedAuthenticator(
            PgAuthenticator(pool, executor=self._executor), guard, LoginAudit(pool),
            delay=config.auth.login_failure_delay, protocol="smtp",
        )
        self._submit_batcher = SubmitBatcher(pool, self._spool, config.queue, self._executor)
        self._audit = AuditBatcher(pool)
        self._audit_task = asyncio.get_running_loop().create_task(self._audit.run())
        self._inspector.dkim_keys = DkimKeyCache(pool, version=lambda: self._directory.version)
        self._pool = pool

    async def _authenticate(self, username: str, password: str, ip: str):
        if self._authenticator is None:
            raise ServiceUnavailable("database not reachable yet")
        return await self._authenticator.authenticate(username, password, remote_ip=ip)

    async def _deliver(
        self, body: bytes, recipients: list[Recipient], envelope_from: str, mailbox: str = "INBOX"
    ) -> list[DeliveryOutcome]:
        assert self._router is not None
        now = time.time()
        items = [
            DeliveryItem(
                delivery_id=uuid.uuid4(), body_index=0, recipient=recipient, envelope_from=envelope_from,
                internal_date=now, mailbox=mailbox,
            )
            for recipient in recipients
        ]
        return await self._router.deliver(body, items)

    async def _store_copy(self, body: bytes, recipient: Recipient, envelope_from: str) -> DeliveryOutcome:
        assert self._router is not None
        item = DeliveryItem(
            delivery_id=uuid.uuid4(), body_index=0, recipient=recipient, envelope_from=envelope_from,
            internal_date=time.time(), mailbox="Sent", flags=("\\Seen",),
        )
        return (await self._router.deliver(body, [item]))[0]

    async def _queue(
        self, body: bytes, sender: str, recipients: list[str], user_id: int | None,
        delivery_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        if self._submit_batcher is None:
            raise ServiceUnavailable("database not reachable yet")
        delivery_id = await self._submit_batcher.submit(body, sender, recipients, user_id, delivery_id=delivery_id)
        if user_id is not None and user_id in self._sent_counts:
            count, loaded = self._sent_counts[user_id]
            self._sent_counts[user_id] = (count + 1, loaded)
        if user_id is not None and self._audit is not None:  # a submission (forwards have no user)
            self._audit.add(AuditRow(
                "message_sent", actor_user_id=user_id, actor_email=sender[:320], target_type="delivery",
                target_id=str(delivery_id),
                details={"via": "smtp", "sender": sender, "recipients": len(recipients), "size": len(body)},
            ))
        return delivery_id

    async def _forward(self, body: bytes, addresses: list[str], sender: str, delivery_id: uuid.UUID) -> None:
        await self._queue(body, sender, addresses, None, delivery_id)

    async def _sent_today(self, user_id: int) -> int:
        """Messages the user queued in the last 24 h: counted in PostgreSQL at most every 30 s per user
        (other gateways' submissions show up then), plus this gateway's own since."""
        cached = self._sent_counts.get(user_id)
        if cached is not None and time.monotonic() - cached[1] < SENT_COUNT_TTL:
            return cached[0]
        if self._pool is None:
            raise ServiceUnavailable("database not reachable yet")
        async with self._pool.acquire() as conn:
            count = await queue_store.submissions_today(conn, user_id)
        if len(self._sent_counts) > 100_000:
            self._sent_counts.clear()
        self._sent_counts[user_id] = (count, time.monotonic())
        return count

    async def ready(self) -> list[int]:
        """Wait until the listeners are bound and (for up to 10 s) the directory loaded; returns the ports
        (MTA, submission, submissions)."""
        ports = await asyncio.shield(self._started)
        await self._directory.wait_for_version(1, timeout=10.0)
        return ports

    async def stats(self) -> dict:
        return {
            "sessions_open": len(self._registry.sessions),
            "sessions": self._stats.sessions,
            "accepted": self._stats.messages_accepted,
            "refused": self._stats.messages_refused,
            "recipients_refused": self._stats.recipients_refused,
            "replies": dict(self._stats.by_reply),
            "shard_calls": {n: b.calls for n, b in self._router.batchers.items()} if self._router else {},
            "shard_items": {n: b.items_sent for n, b in self._router.batchers.items()} if self._router else {},
            "directory_version": self._directory.version,
            "queue_writes": self._submit_batcher.writes if self._submit_batcher else 0,
            "queue_items": self._submit_batcher.items if self._submit_batcher else 0,
        }

    async def directory_version(self) -> int:
        return self._directory.version

    async def wait_directory_version(self, version: int, timeout: float = 10.0) -> int:
        """Wait until the gateway's Directory cache reached `version` (tests, operators)."""
        await asyncio.shield(self._started)
        return await self._directory.wait_for_version(version, timeout)

    async def stop(self, grace: float = 30.0) -> int:
        """Stop accepting, let sessions in flight finish (up to `grace` s); returns sessions cut off."""
        for server in self._servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registry.empty.wait(), timeout=grace)
        cut = len(self._registry.sessions)
        for session in list(self._registry.sessions):
            if session.transport is not None:
                session.transport.close()
        if self._audit is not None:  # the rows of the sessions that just ended
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._audit.flush(), 5.0)
        await self._directory.stop()
        return cut
