"""HTTP gateway actor: the REST API and WebSocket on Sanic, served from the actor's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray

from actors.notification_hub import HUB_NAME, live_feed_for
from whymail import antivirus
from whymail.api.app import build_app
from whymail.api.context import ApiContext
from whymail.api.errors import ApiError
from whymail.api.ratelimit import ApiRateLimiter, api_limits
from whymail.api.tokens import load_secret
from whymail.auth.lockout import LoginGuard
from whymail.db.dkim_keys import DkimKeyCache
from whymail.db.pool import create_pool
from whymail.logs import setup_logging
from whymail.notify.events import LiveEvent
from whymail.notify.publisher import EventPublisher
from whymail.queue.spool import Spool
from whymail.queue.submit import SubmitBatcher
from whymail.ratelimit import redis_client
from whymail.runtime import Runtime
from whymail.sharding import rendezvous_owner
from whymail.smtp.inspect import MessageInspector

log = logging.getLogger("whymail.gateway.http")

# Named actors whose stats() /metrics reports, by the prefix of their name.
_STATS_GROUPS = {"smtp-gateway-": "smtp", "imap-gateway-": "imap", "delivery-queue-": "queues"}
_STATS_TIMEOUT = 2.0
_ACTOR_LIST_TTL = 30.0


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
        self._stats_actors: dict[str, tuple[str, object]] = {}  # actor name -> (group, handle)
        self._stats_actors_at = float("-inf")
        self._hub = None
        self._started = asyncio.get_event_loop().create_task(self._start())

    def _find_stats_actors(self) -> dict[str, tuple[str, object]]:
        """The named SMTP/IMAP gateways and delivery queues of this namespace (blocking GCS calls)."""
        found = {}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            group = next((g for prefix, g in _STATS_GROUPS.items() if name.startswith(prefix)), None)
            if entry["namespace"] == self._namespace and group is not None:
                found[name] = (group, ray.get_actor(name, namespace=self._namespace))
        return found

    async def _cluster_stats(self) -> dict[str, dict[str, dict | None]]:
        """Every SMTP gateway's, IMAP gateway's and delivery queue's stats(); None for one that did not
        answer within _STATS_TIMEOUT."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._stats_actors_at > _ACTOR_LIST_TTL:
            self._stats_actors = await loop.run_in_executor(self._executor, self._find_stats_actors)
            self._stats_actors_at = loop.time()
        names = list(self._stats_actors)
        replies = await asyncio.gather(
            *(asyncio.wait_for(self._stats_actors[n][1].stats.remote(), _STATS_TIMEOUT) for n in names),
            return_exceptions=True,
        )
        result: dict[str, dict[str, dict | None]] = {group: {} for group in _STATS_GROUPS.values()}
        for name, reply in zip(names, replies, strict=True):
            result[self._stats_actors[name][0]][name] = reply if isinstance(reply, dict) else None
        return result

    async def _send_events(self, batch: list[LiveEvent]) -> None:
        """The gateway's own live events (notifications stored by requests) to the hub."""
        if self._hub is None:
            self._hub = ray.get_actor(HUB_NAME, namespace=self._namespace)
        await self._hub.publish.remote(batch)

    async def _start(self) -> int:
        config = self._runtime.config
        pool = await create_pool(self._runtime.dsn, min_size=1, max_size=config.server.http.db_pool)
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
            rate_limiter=ApiRateLimiter(
                api_limits(config.limits), redis_client=redis, prefix=f"whymail:{self._namespace}:api"
            ),
            cluster_stats=self._cluster_stats, name=f"http-gateway-{self._index}",
            live=live_feed_for(self._namespace, f"http-gateway-{self._index}"),
        )
        context.live.publish_with(EventPublisher(self._send_events))
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
