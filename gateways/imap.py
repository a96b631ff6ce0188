"""IMAP gateway actor: the listeners (STARTTLS port and implicit-TLS port) around the sans-I/O core.

Reads go straight to PostgreSQL and Maildir (PgStorage); every write and every IDLE long-poll goes to
the MailboxShard that owns the user (rendezvous hashing), as DESIGN.md describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray

from whymail.auth.lockout import GuardedAuthenticator, LoginGuard
from whymail.db.audit import LoginAudit
from whymail.db.pool import create_pool
from whymail.imap.pg_storage import PgAuthenticator, PgStorage
from whymail.imap.server import ImapConnection
from whymail.imap.session import Session
from whymail.logs import setup_logging
from whymail.ratelimit import ConnectionCounter, redis_client
from whymail.runtime import Runtime
from whymail.sharding import rendezvous_owner
from whymail.tls import server_context

log = logging.getLogger("whymail.gateway.imap")


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class ShardMailboxProxy:
    """Looks like MailboxOps to PgStorage; each call runs on the shard that owns `user_id`."""

    def __init__(self, shards: dict[str, object]) -> None:
        self._shards = shards
        self._names = list(shards)

    def __getattr__(self, operation: str):
        async def call(user_id: int, *args, **kwargs):
            shard = self._shards[rendezvous_owner(user_id, self._names)]
            try:
                return await shard.mailbox_op.remote(operation, user_id, *args, **kwargs)
            except ray.exceptions.RayTaskError as exc:
                raise exc.cause from None  # StorageError & co. reach the session as they were raised

        return call


@ray.remote(max_restarts=-1, max_task_retries=0)
class ImapGateway:
    def __init__(
        self,
        runtime: Runtime,
        shard_names: list[str],
        namespace: str,
        port: int | None = None,
        imaps_port: int | None = None,
    ) -> None:
        setup_logging(runtime.config.logging, component="imap-gateway")
        self._runtime = runtime
        self._shard_names = shard_names
        self._namespace = namespace
        imap = runtime.config.server.imap
        self._ports = (imap.port if port is None else port, imap.imaps_port if imaps_port is None else imaps_port)
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task] = set()
        self._limits = ConnectionCounter(
            runtime.config.limits.max_connections_per_ip, runtime.config.limits.max_connections
        )
        self._user_connections = ConnectionCounter(runtime.config.limits.max_imap_connections_per_user, 2**62)
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="imap-io")
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> tuple[int, int]:
        config = self._runtime.config
        pool = await create_pool(self._runtime.dsn, min_size=config.db.min_pool, max_size=config.db.max_pool)
        shards = {name: ray.get_actor(name, namespace=self._namespace) for name in self._shard_names}
        proxy = ShardMailboxProxy(shards)
        self._storage = PgStorage(pool, self._runtime.maildir_root, proxy, proxy, executor=self._executor)
        auth = config.auth
        guard = LoginGuard(
            max_per_ip=auth.max_failures_per_ip,
            max_per_account=auth.max_failures_per_account,
            window=auth.failure_window,
            lockout=auth.lockout_seconds,
            redis_client=redis_client(self._runtime.redis_addr, db=config.redis.db, password=config.redis.password)
            if self._runtime.redis_addr
            else None,
            prefix=f"whymail:{self._namespace}:login",
        )
        self._authenticator = GuardedAuthenticator(
            PgAuthenticator(pool, executor=self._executor), guard, LoginAudit(pool),
            delay=auth.login_failure_delay, protocol="imap",
        )
        self._tls = server_context(config.server.tls, Path(self._runtime.state_dir), config.server.hostname)
        host = config.server.imap.host
        plain = await asyncio.start_server(
            lambda r, w: self._accept(r, w, implicit_tls=False), host, self._ports[0], reuse_port=True
        )
        secure = await asyncio.start_server(
            lambda r, w: self._accept(r, w, implicit_tls=True), host, self._ports[1], ssl=self._tls,
            reuse_port=True,
        )
        self._servers = [plain, secure]
        self._ports = (plain.sockets[0].getsockname()[1], secure.sockets[0].getsockname()[1])
        log.info("imap listening on %s:%d (STARTTLS) and %d (TLS)", host, *self._ports)
        return self._ports

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit_tls: bool) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._limits.acquire(ip):
            writer.write(b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        session: Session | None = None
        try:
            imap = self._runtime.config.server.imap
            session = Session(
                self._storage,
                self._authenticator,
                tls_active=implicit_tls,
                starttls_available=not implicit_tls,
                # Passwords in clear only from this machine (dev); remote clients need TLS first.
                allow_plaintext_login=imap.allow_plaintext_login and _is_loopback(ip),
                remote_ip=ip,
                user_connections=self._user_connections,
            )
            connection = ImapConnection(
                reader, writer, session, tls_context=None if implicit_tls else self._tls,
                idle_timeout=imap.idle_timeout,
            )
            await connection.run()
        finally:
            self._limits.release(ip)
            if session is not None and session.account is not None:
                self._user_connections.release(str(session.account.user_id))
            if task is not None:
                self._connections.discard(task)

    async def ready(self) -> tuple[int, int]:
        """Wait until both listeners are bound; returns (STARTTLS port, implicit-TLS port)."""
        return await asyncio.shield(self._started)

    async def stats(self) -> dict:
        """Figures for /metrics: connections open, and sessions logged in among them."""
        return {"sessions_open": len(self._connections), "sessions_authenticated": self._user_connections.open}

    async def stop(self, grace: float = 10.0) -> int:
        """Stop accepting; give open sessions `grace` seconds, then close them; returns those cut."""
        for server in self._servers:
            server.close()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=grace)
        cut = len(self._connections)
        for task in list(self._connections):
            task.cancel()
        return cut
