"""`GET /metrics`: Prometheus figures of the whole cluster, outside /api/v1 where scrapers look.

No login: a scraper on the machine (loopback, and not relayed by a proxy) reads it freely; anyone
else needs an admin's token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from sanic import HTTPResponse, Request

from whymail.api import tokens
from whymail.api.errors import ApiError
from whymail.metrics import CONTENT_TYPE, ClusterFigures, PoolFigures, queue_depth_by_state, render

log = logging.getLogger("whymail.http.metrics")

PATH = "/metrics"
_DB_TIMEOUT = 2.0
_ACTORS_TIMEOUT = 3.0


def is_local(request: Request) -> bool:
    """The peer is this machine and the request was not relayed (a proxy on loopback would make
    every client look local, so any forwarding header counts as remote)."""
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(request.ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def gather_figures(ctx) -> ClusterFigures:
    """Read every figure now: the actors' stats, the queue depth from PostgreSQL, this gateway's pool
    and rate limiter. A part that does not answer in time is reported as down, not as an error."""
    figures = ClusterFigures()
    if ctx.cluster_stats is not None:
        try:
            async with asyncio.timeout(_ACTORS_TIMEOUT):
                stats = await ctx.cluster_stats()
            figures.smtp = stats.get("smtp", {})
            figures.imap = stats.get("imap", {})
            figures.queues = stats.get("queues", {})
        except Exception as exc:
            log.warning("metrics: actor stats unavailable: %r", exc)
    try:
        async with asyncio.timeout(_DB_TIMEOUT):
            async with ctx.pool.acquire() as conn:
                figures.queue_depth = await queue_depth_by_state(conn)
    except Exception as exc:
        log.warning("metrics: queue depth unavailable: %r", exc)
    figures.caches = {
        "api_mailbox_lists": (ctx.mailbox_cache.hits, ctx.mailbox_cache.misses),
        "api_accounts": (ctx.caller_cache_hits, ctx.caller_cache_misses),
        "api_tokens": (tokens.TOKEN_CACHE["hits"], tokens.TOKEN_CACHE["misses"]),
    }
    pool = ctx.pool
    figures.pools[ctx.name] = PoolFigures(pool.get_size(), pool.get_idle_size(), pool.get_max_size())
    limiter = ctx.rate_limiter
    figures.rate_limited = dict(limiter.refused)
    figures.ratelimit_redis_errors = limiter.redis_errors
    figures.ratelimit_on_redis = limiter.using_redis if limiter.has_redis else None
    return figures


def install(app, authenticate) -> None:
    """Add `GET /metrics` to the Sanic `app`; `authenticate` is the API's (401 without a valid token)."""

    async def prometheus_metrics(request: Request) -> HTTPResponse:
        if not is_local(request):
            caller = await authenticate(request)
            if not caller.is_admin:
                raise ApiError(403, "forbidden", "metrics are for administrators")
        ctx = request.app.ctx.api
        body = render(await gather_figures(ctx), ctx.http_metrics)
        return HTTPResponse(body, content_type=CONTENT_TYPE)

    app.add_route(prometheus_metrics, PATH, methods=["GET"], name="prometheus_metrics")
