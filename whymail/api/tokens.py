"""Credentials of API callers: short-lived JWT access tokens, refresh tokens, API tokens.

Access tokens are HS256 JWTs (`sub` = user id) that live `auth.access_token_ttl` seconds. Refresh
and API tokens are random strings shown once; only their SHA-256 is stored, so a database leak
does not leak usable tokens. A refresh is single-use: refreshing revokes the old one (rotation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import jwt

API_TOKEN_PREFIX = "wm_"
ROLES = ("user", "owner", "admin")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: every object an API handler touches is checked against this."""

    user_id: int
    email: str
    role: str
    domain_id: int
    domain: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_manage_domain(self, domain_id: int) -> bool:
        return self.role == "admin" or (self.role == "owner" and self.domain_id == domain_id)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_secret(configured: str, state_dir: Path) -> str:
    """The JWT secret: configured, else generated once into `<state_dir>/jwt_secret` (mode 0600)."""
    if configured:
        return configured
    path = Path(state_dir) / "jwt_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="ascii") as out:  # another process may win the race: use theirs
            path.chmod(0o600)
            out.write(secret)
    except FileExistsError:
        return path.read_text().strip()
    return secret


def issue_access_token(secret: str, caller: Caller, ttl: int) -> str:
    now = int(time.time())
    claims = {"sub": str(caller.user_id), "role": caller.role, "email": caller.email, "iat": now,
              "exp": now + ttl, "jti": secrets.token_hex(8), "typ": "access"}
    return jwt.encode(claims, secret, algorithm="HS256")


_VERIFIED: dict[tuple[str, str], tuple[int, float]] = {}  # (secret, token) -> (user id, exp)
_VERIFIED_MAX = 20_000
TOKEN_CACHE = {"hits": 0, "misses": 0}  # verified-token cache of this process, for /metrics


def decode_access_token(secret: str, token: str) -> int | None:
    """The user id of a valid, unexpired access token; None otherwise.

    A client sends the same token with every request for its lifetime: a verified one is remembered
    until it expires, so the signature is checked once per token, not once per request."""
    key = (secret, token)
    known = _VERIFIED.get(key)
    if known is not None:
        if known[1] > time.time():
            TOKEN_CACHE["hits"] += 1
            return known[0]
        del _VERIFIED[key]
        return None
    TOKEN_CACHE["misses"] += 1
    user_id = _decode(secret, token)
    if user_id is not None:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = user_id
    return user_id[0] if user_id is not None else None


def access_token_expiry(secret: str, token: str) -> float | None:
    """When a valid access token expires (epoch seconds); None if it is not one."""
    if decode_access_token(secret, token) is None:
        return None
    known = _VERIFIED.get((secret, token))
    return known[1] if known is not None else None


def _decode(secret: str, token: str) -> tuple[int, float] | None:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    try:
        return int(claims["sub"]), float(claims["exp"])
    except (TypeError, ValueError):
        return None


_CALLER_SQL = """
    SELECT u.id, u.email, u.role, u.domain_id, d.name AS domain FROM users u JOIN domains d ON d.id = u.domain_id
    WHERE u.id = $1 AND u.is_active AND d.is_active"""


async def caller_by_id(conn: asyncpg.Connection, user_id: int) -> Caller | None:
    row = await conn.fetchrow(_CALLER_SQL, user_id)
    return None if row is None else Caller(row["id"], row["email"], row["role"], row["domain_id"], row["domain"])


async def create_refresh_token(conn: asyncpg.Connection, user_id: int, ttl: int) -> str:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO refresh_tokens (user_id, token_hash, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
        user_id, token_hash(token), float(ttl),
    )
    return token


async def use_refresh_token(conn: asyncpg.Connection, token: str) -> int | None:
    """Revoke a valid refresh token and return its user id (None if unknown, expired or revoked)."""
    return await conn.fetchval(
        "UPDATE refresh_tokens SET revoked_at = now() "
        "WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING user_id",
        token_hash(token),
    )


async def revoke_refresh_token(conn: asyncpg.Connection, token: str, user_id: int) -> bool:
    status = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL",
        token_hash(token), user_id,
    )
    return status.endswith(" 1")


async def create_api_token(
    conn: asyncpg.Connection, user_id: int, name: str, expires_at: dt.datetime | None
) -> tuple[int, str]:
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = await conn.fetchval(
        "INSERT INTO api_tokens (user_id, name, token_hash, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
        user_id, name, token_hash(token), expires_at,
    )
    return token_id, token


async def user_of_api_token(conn: asyncpg.Connection, token: str) -> int | None:
    return await conn.fetchval(
        "UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1 AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > now()) RETURNING user_id",
        token_hash(token),
    )
