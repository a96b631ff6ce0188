"""The Sanic application: middleware (request ids, limits, security headers, CORS, gzip, access
log), JSON errors without tracebacks, authentication, and the routes of `whymail.api.routes`."""

from __future__ import annotations

import gzip
import logging
import re
import time
import uuid

import orjson
from sanic import HTTPResponse, Request, Sanic
from sanic.exceptions import SanicException

from whymail.api import tokens
from whymail.api.context import ApiContext
from whymail.api.errors import ApiError, unauthorized
from whymail.api.mailbox_cache import MailboxListCache
from whymail.api.ratelimit import bearer_user, refusal_message, route_name
from whymail.api.routes import api
from whymail.api.routes import metrics as metrics_route
from whymail.api.routes.notifications import install_websocket

log = logging.getLogger("whymail.http")
access_log = logging.getLogger("whymail.http.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
_GZIP_MIN = 1024


def _error(request: Request | None, status: int, error: str, message: str, headers=None) -> HTTPResponse:
    request_id = getattr(getattr(request, "ctx", None), "request_id", "") if request is not None else ""
    body = orjson.dumps({"error": error, "message": message, "request_id": request_id})
    return HTTPResponse(body, status=status, headers=headers, content_type="application/json")


CALLER_TTL = 5.0  # seconds a disabled or demoted account may still use a token it holds


async def _caller(ctx: ApiContext, user_id: int) -> tokens.Caller | None:
    """The account behind a token, from PostgreSQL at most every CALLER_TTL seconds per user."""
    now = time.monotonic()
    cached = ctx.callers.get(user_id)
    if cached is not None and cached[1] > now:
        ctx.caller_cache_hits += 1
        return cached[0]
    ctx.caller_cache_misses += 1
    async with ctx.pool.acquire() as conn:
        caller = await tokens.caller_by_id(conn, user_id)
    if len(ctx.callers) > 50_000:
        ctx.callers.clear()
    if caller is not None:
        ctx.callers[user_id] = (caller, now + CALLER_TTL)
    else:
        ctx.callers.pop(user_id, None)
    return caller


async def authenticate(request: Request) -> tokens.Caller:
    """The caller of a request with `Authorization: Bearer <access JWT | API token>`; 401 otherwise."""
    cached = getattr(request.ctx, "caller", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    ctx: ApiContext = request.app.ctx.api
    token = token.strip()
    if token.startswith(tokens.API_TOKEN_PREFIX):
        async with ctx.pool.acquire() as conn:
            user_id = await tokens.user_of_api_token(conn, token)
    else:
        user_id = tokens.decode_access_token(ctx.secret, token)
    caller = await _caller(ctx, user_id) if user_id is not None else None
    if caller is None:
        raise unauthorized("invalid or expired token")
    if getattr(request.ctx, "rate_user", None) != caller.user_id:  # not counted yet (an API token)
        limiter = ctx.rate_limiter
        decision = await limiter.check(limiter.buckets_for_user(caller.user_id, route_name(request)))
        request.ctx.rate_limit = decision.tighter(getattr(request.ctx, "rate_limit", None))
        if not decision.allowed:
            raise ApiError(429, "rate_limited", refusal_message(decision), decision.headers())
    request.ctx.caller = caller
    return caller


def build_app(context: ApiContext, name: str = "whymail") -> Sanic:
    app = Sanic(name, configure_logging=False, dumps=lambda v: orjson.dumps(v).decode())
    app.config.REQUEST_MAX_SIZE = context.config.server.smtp.max_message_size + 1024 * 1024
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.WEBSOCKET_PING_INTERVAL = 20
    app.config.WEBSOCKET_PING_TIMEOUT = 20
    app.ctx.api = context
    if context.live is not None and not context.mailbox_cache.enabled:
        # The live feed keeps the cached mailbox lists correct; writes through this gateway drop the
        # writer's list at once (read-your-writes before the shard's event comes back).
        context.mailbox_cache = MailboxListCache(context.live)
        if context.mailbox_op is not None:
            context.mailbox_op = context.mailbox_cache.wrap_writes(context.mailbox_op)
    allowed_origins = set(context.config.cors.allowed_origins)

    @app.on_request
    async def before(request: Request):
        incoming = request.headers.get("x-request-id", "")
        request.ctx.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.ctx.started = time.perf_counter()
        request.ctx.caller = None
        origin = request.headers.get("origin")
        if request.method == "OPTIONS" and origin:
            if origin not in allowed_origins:
                return _error(request, 403, "cors", "origin not allowed")
            return HTTPResponse(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Request-ID",
                "Access-Control-Max-Age": "600", "Vary": "Origin",
            })
        # One atomic check of the IP's buckets, and the user's when an access JWT names them.
        user_id = bearer_user(context.secret, request.headers.get("authorization", ""))
        request.ctx.rate_user = user_id
        decision = await context.rate_limiter.check_request(request.client_ip or "?", user_id, route_name(request))
        request.ctx.rate_limit = decision
        if not decision.allowed:
            return _error(request, 429, "rate_limited", refusal_message(decision), decision.headers())
        return None

    @app.on_response
    async def after(request: Request, response: HTTPResponse):
        request_id = getattr(request.ctx, "request_id", "")
        response.headers["X-Request-ID"] = request_id
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        origin = request.headers.get("origin")
        if origin and origin in allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        decision = getattr(request.ctx, "rate_limit", None)
        if decision is not None:
            for key, value in decision.headers().items():
                response.headers.setdefault(key, value)
        body = response.body
        if (body and len(body) >= _GZIP_MIN and "gzip" in request.headers.get("accept-encoding", "")
                and "content-encoding" not in response.headers):
            response.body = gzip.compress(body, compresslevel=5)
            response.headers["Content-Encoding"] = "gzip"
            response.headers["Vary"] = "Accept-Encoding"
        started = getattr(request.ctx, "started", None)
        if started is not None:
            context.http_metrics.observe(route_name(request), request.method, response.status,
                                         time.perf_counter() - started)
        caller = getattr(request.ctx, "caller", None)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s", request.method, request.path, response.status, extra={
                "request_id": request_id, "status": response.status, "ip": request.client_ip,
                "user": caller.email if caller else None,
                "ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            })

    @app.exception(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(request, exc.status, exc.error, exc.message, exc.headers)

    @app.exception(SanicException)
    async def sanic_error(request: Request, exc: SanicException):
        status = getattr(exc, "status_code", 500) or 500
        name = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 408: "timeout"}.get(status, "error")
        message = str(exc) if status < 500 else "internal error"
        return _error(request, status, name, message)

    @app.exception(Exception)
    async def crash(request: Request, exc: Exception):
        log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc,
                  extra={"request_id": getattr(request.ctx, "request_id", "")})
        return _error(request, 500, "internal", "internal error; the request id is in the server log")

    api.install(app, authenticate)
    install_websocket(app)
    metrics_route.install(app, authenticate)

    @app.get("/api/v1/openapi.json", name="openapi")
    async def openapi(request: Request):
        return HTTPResponse(orjson.dumps(api.openapi("WhyMail API", "1")), content_type="application/json")

    @app.get("/api/v1/docs", name="docs")
    async def docs(request: Request):
        html = _docs_page()
        return HTTPResponse(html, content_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    return app


def _docs_page() -> str:
    """A self-contained page listing every operation (no CDN: servers are often offline)."""
    rows = []
    for op in api.operations:
        rows.append(f"<tr><td><code>{op.method}</code></td><td><code>{api.prefix}{op.path}</code></td>"
                    f"<td>{op.tag}</td><td>{op.summary}</td></tr>")
    return ("<!doctype html><html><head><meta charset=utf-8><title>WhyMail API</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 8px}</style></head><body>"
            "<h1>WhyMail API v1</h1><p>The machine-readable document is <a href=\"openapi.json\">openapi.json</a>."
            " Authenticate with <code>POST /api/v1/auth/login</code>, then send <code>Authorization: Bearer"
            " &lt;access token&gt;</code>.</p><table>" + "".join(rows) + "</table></body></html>")
