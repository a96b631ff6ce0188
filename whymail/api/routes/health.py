"""Liveness and readiness, for load balancers and orchestrators (no authentication)."""

from __future__ import annotations

import asyncio

from sanic import HTTPResponse

from whymail.api.models import Health
from whymail.api.routes import api
from whymail.api.spec import Req


@api.route("GET", "/healthz", tag="operations", response=Health, auth=False)
async def healthz(req: Req) -> Health:
    """The HTTP gateway is up."""
    return Health(status="ok")


@api.route("GET", "/readyz", tag="operations", response=Health, auth=False, errors=(503,))
async def readyz(req: Req):
    """PostgreSQL, Redis (when configured) and the actors answer; 503 otherwise."""
    checks: dict[str, bool] = {}
    try:
        async with asyncio.timeout(2.0):
            async with req.ctx.pool.acquire() as conn:
                checks["postgres"] = await conn.fetchval("SELECT 1") == 1
    except Exception:
        checks["postgres"] = False
    if req.ctx.readiness is not None:
        try:
            async with asyncio.timeout(3.0):
                checks.update(await req.ctx.readiness())
        except Exception:
            checks["actors"] = False
    ready = all(checks.values())
    body = Health(status="ready" if ready else "not_ready", checks=checks)
    return HTTPResponse(body.model_dump_json(), status=200 if ready else 503, content_type="application/json")
