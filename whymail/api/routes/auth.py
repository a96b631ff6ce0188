"""Login, token refresh and logout, the caller's own account, and API tokens for scripts."""

from __future__ import annotations

import asyncio
import datetime as dt

from whymail.api import tokens
from whymail.api.errors import ApiError, not_found
from whymail.api.models import (
    ApiTokenCreated,
    ApiTokenIn,
    ApiTokenOut,
    LoginIn,
    RefreshIn,
    TokenPair,
    UserOut,
)
from whymail.api.routes import api
from whymail.api.spec import Req
from whymail.auth.passwords import verify_password
from whymail.db.audit import write_audit
from whymail.imap.pg_storage import _DUMMY_HASH  # unknown users cost a bcrypt check too

_USER_SQL = """
    SELECT u.id, u.email, d.name AS domain, u.role, u.display_name, u.is_active, u.quota_bytes, u.storage_used,
           u.message_count, u.created_at, u.last_login_at
    FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1"""
INVALID = ApiError(401, "invalid_credentials", "wrong email or password")


async def user_out(conn, user_id: int) -> UserOut:
    row = await conn.fetchrow(_USER_SQL, user_id)
    if row is None:
        raise not_found("user")
    return UserOut(**dict(row))


async def _pair(req: Req, caller: tokens.Caller) -> TokenPair:
    auth = req.ctx.config.auth
    async with req.ctx.pool.acquire() as conn:
        refresh = await tokens.create_refresh_token(conn, caller.user_id, auth.refresh_token_ttl)
        user = await user_out(conn, caller.user_id)
    return TokenPair(
        access_token=tokens.issue_access_token(req.ctx.secret, caller, auth.access_token_ttl),
        refresh_token=refresh, expires_in=auth.access_token_ttl, user=user,
    )


@api.route("POST", "/auth/login", tag="auth", body=LoginIn, response=TokenPair, auth=False, errors=(401,))
async def login(req: Req) -> TokenPair:
    """Exchange email and password for an access token and a refresh token."""
    ip = req.request.client_ip or "?"
    email = req.body.email.lower()
    if req.ctx.login_guard is not None:
        lock = await req.ctx.login_guard.locked(ip, email)
        if lock is not None:
            await write_audit(req.ctx.pool, "login_locked", actor_email=email[:320], actor_ip=ip,
                              details={"protocol": "http", "reason": f"{lock} locked"})
            raise INVALID
    async with req.ctx.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT u.id, u.password_hash, u.is_active AND d.is_active AS active FROM users u "
            "JOIN domains d ON d.id = u.domain_id WHERE u.email = $1", email,
        )
    hashed = row["password_hash"] if row is not None else _DUMMY_HASH
    ok = await asyncio.to_thread(verify_password, req.body.password, hashed)
    if not ok or row is None or not row["active"]:
        if req.ctx.login_guard is not None:
            await req.ctx.login_guard.failed(ip, email)
        await write_audit(req.ctx.pool, "login_failed", actor_email=email[:320], actor_ip=ip,
                          details={"protocol": "http", "reason": "bad credentials"})
        raise INVALID
    async with req.ctx.pool.acquire() as conn:
        caller = await tokens.caller_by_id(conn, row["id"])
        await conn.execute("UPDATE users SET last_login_at = now() WHERE id = $1", row["id"])
    if caller is None:
        raise INVALID
    if req.ctx.login_guard is not None:
        await req.ctx.login_guard.succeeded(email)
    await write_audit(req.ctx.pool, "login", actor_user_id=caller.user_id, actor_email=caller.email, actor_ip=ip,
                      details={"protocol": "http"})
    return await _pair(req, caller)


@api.route("POST", "/auth/refresh", tag="auth", body=RefreshIn, response=TokenPair, auth=False, errors=(401,))
async def refresh(req: Req) -> TokenPair:
    """A new token pair for a valid refresh token (which is used up: refresh tokens rotate)."""
    async with req.ctx.pool.acquire() as conn:
        user_id = await tokens.use_refresh_token(conn, req.body.refresh_token)
        caller = await tokens.caller_by_id(conn, user_id) if user_id is not None else None
    if caller is None:
        raise ApiError(401, "invalid_token", "refresh token unknown, expired or revoked")
    return await _pair(req, caller)


@api.route("POST", "/auth/logout", tag="auth", body=RefreshIn, status=204)
async def logout(req: Req) -> None:
    """Revoke a refresh token of the caller (the access token expires by itself)."""
    async with req.ctx.pool.acquire() as conn:
        await tokens.revoke_refresh_token(conn, req.body.refresh_token, req.me().user_id)


@api.route("GET", "/auth/me", tag="auth", response=UserOut)
async def me(req: Req) -> UserOut:
    """The caller's own account."""
    async with req.ctx.pool.acquire() as conn:
        return await user_out(conn, req.me().user_id)


@api.route("POST", "/auth/tokens", tag="auth", body=ApiTokenIn, response=ApiTokenCreated, status=201)
async def create_api_token(req: Req) -> ApiTokenCreated:
    """An API token for scripts and `whymailctl`: acts as the caller, shown once."""
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=req.body.expires_in_days)
               if req.body.expires_in_days else None)
    async with req.ctx.pool.acquire() as conn:
        token_id, token = await tokens.create_api_token(conn, req.me().user_id, req.body.name, expires)
        row = await conn.fetchrow("SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens WHERE id = $1",
                                  token_id)
    return ApiTokenCreated(token=token, **dict(row))


@api.route("GET", "/auth/tokens", tag="auth", response=[ApiTokenOut])
async def list_api_tokens(req: Req) -> list[ApiTokenOut]:
    """The caller's API tokens that are not revoked."""
    async with req.ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens "
            "WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id", req.me().user_id,
        )
    return [ApiTokenOut(**dict(r)) for r in rows]


@api.route("DELETE", "/auth/tokens/{token_id:int}", tag="auth", status=204, errors=(404,))
async def revoke_api_token(req: Req) -> None:
    """Revoke one of the caller's API tokens."""
    async with req.ctx.pool.acquire() as conn:
        status = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            req.params["token_id"], req.me().user_id,
        )
    if not status.endswith(" 1"):
        raise not_found("token")
