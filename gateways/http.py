"""HTTP gateway actor: the REST API and WebSocket on Sanic, served from the actor's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray

from actors.notification_hub import live_feed_for
from whymail import antivirus
from whymail.api.app import build_app
from whymail.api.context import ApiContext
from whymail.api.errors import ApiError
from whymail.api.tokens import load_secret
from whymail.auth.lockout import LoginGuard
from whymail.db.dkim_keys import DkimKeyCache
from whymail.db.pool import create_pool
from whymail.logs import setup_logging
from whymail.queue.spool import Spool
from whymail.queue.submit import SubmitBatcher
from whymail.ratelimit import redis_client
from whymail.runtime import Runtime
from whymail.sharding import rendezvous_owner
from whymail.smtp.inspect import MessageInspector

log = logging.getLogger("whymail.gateway.http")


def _listen_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # several gateways on one node
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@ray.remote(max_restarts=-1, max_task_retries=0)
class HttpGateway:
    def __init__(self, runtime: Runtime, shard_names: list[str], namespace: str, port: int | None = None,
                 index: int = 0) -> None:
        setup_logging(runtime.config.logging, component=f"http-gateway-{index}")
        self._runtime = runtime
        self._shard_names = list(shard_names)
        self._namespace = namespace
        self._port = runtime.config.server.http.port if port is None else port
        self._index = index
        self._server = None
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-io")
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> int:
        config = self._runtime.config
        pool = await create_pool(self._runtime.dsn, min_size=1, max_size=config.db.max_pool)
        shards = {name: ray.get_actor(name, namespace=self._namespace) for name in self._shard_names}
        redis = (redis_client(self._runtime.redis_addr, db=config.redis.db, password=config.redis.password)
                 if self._runtime.redis_addr else None)
        auth = config.auth
        guard = LoginGuard(
            max_per_ip=auth.max_failures_per_ip, max_per_account=auth.max_failures_per_account,
            window=auth.failure_window, lockout=auth.lockout_seconds, redis_client=redis,
            prefix=f"whymail:{self._namespace}:login",  # the same counters as SMTP and IMAP
        )

        async def mailbox_op(operation: str, user_id: int, *args, **kwargs):
            owner = rendezvous_owner(user_id, self._shard_names)
            return await shards[owner].mailbox_op.remote(operation, user_id, *args, **kwargs)

        async def readiness() -> dict[str, bool]:
            names = list(shards)
            results = await asyncio.gather(*(shards[n].ready.remote() for n in names), return_exceptions=True)
            checks = {"shards": all(not isinstance(r, BaseException) for r in results)}
            if redis is not None:
                try:
                    checks["redis"] = bool(await redis.ping())
                except Exception:
                    checks["redis"] = False
            return checks

        spool = Spool(self._runtime.maildir_root, fsync=config.storage.fsync)
        submitter = SubmitBatcher(pool, spool, config.queue, self._executor)
        inspector = MessageInspector(
            config, scanner=antivirus.from_config(config.plugins.antivirus), resolver=None,
            dkim_keys=DkimKeyCache(pool),
        )

        async def queue_message(data: bytes, sender: str, recipients: list[str], user_id: int | None):
            """Scan, DKIM-sign and queue a message the API composed: the same path as SMTP submission.
            Returns (delivery id, the bytes queued) or raises ApiError for a virus / scanner outage."""
            signed, refusal = await inspector.submission(data)
            if refusal is not None:
                status = 422 if refusal.code >= 500 else 503
                raise ApiError(status, "message_refused", f"{refusal.code} {refusal.enhanced} {refusal.text}")
            delivery_id = await submitter.submit(signed, sender, recipients, user_id)
            return delivery_id, signed

        context = ApiContext(
            config=config, pool=pool, secret=load_secret(auth.jwt_secret, Path(self._runtime.state_dir)),
            state_dir=Path(self._runtime.state_dir), mailbox_op=mailbox_op, readiness=readiness,
            login_guard=guard, queue_message=queue_message,
            live=live_feed_for(self._namespace, f"http-gateway-{self._index}"),
        )
        self._app = build_app(context, name=f"whymail_http_{self._index}")
        sock = _listen_socket(config.server.http.host, self._port)
        self._port = sock.getsockname()[1]
        self._server = await self._app.create_server(sock=sock, return_asyncio_server=True)
        await self._server.startup()
        await self._server.before_start()
        await self._server.after_start()
        log.info("http listening on %s:%d", config.server.http.host, self._port)
        return self._port

    async def ready(self) -> int:
        return await asyncio.shield(self._started)

    async def stop(self, grace: float = 10.0) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.before_stop()
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=grace)
