"""The audit log (`audit_logs`): who did what, from where. Writing it never breaks the caller."""

from __future__ import annotations

import ipaddress
import json
import logging

import asyncpg

from whymail.imap.storage import Account

log = logging.getLogger("whymail.audit")

_INSERT = """INSERT INTO audit_logs (actor_user_id, actor_email, actor_ip, action, target_type, target_id, details)
             VALUES ($1, $2, $3::inet, $4, $5, $6, $7::jsonb)"""


def _inet(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


async def write_audit(
    pool: asyncpg.Pool,
    action: str,
    *,
    actor_user_id: int | None = None,
    actor_email: str | None = None,
    actor_ip: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict | None = None,
) -> bool:
    """Insert one audit row; False (and a log line) when it could not be written."""
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                _INSERT, actor_user_id, actor_email, _inet(actor_ip), action, target_type, target_id,
                json.dumps(details or {}),
            )
        return True
    except Exception:
        log.exception("could not write audit row %s", action)
        return False


class LoginAudit:
    """What `GuardedAuthenticator` records: login / login_failed / login_locked rows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def login_failed(self, username: str, ip: str, protocol: str, *, locked: bool, reason: str) -> None:
        await write_audit(
            self._pool, "login_locked" if locked else "login_failed", actor_email=username[:320], actor_ip=ip,
            details={"username": username[:320], "protocol": protocol, "reason": reason},
        )

    async def login_succeeded(self, account: Account, ip: str, protocol: str) -> None:
        await write_audit(
            self._pool, "login", actor_user_id=account.user_id, actor_email=account.email, actor_ip=ip,
            details={"username": account.email, "protocol": protocol},
        )
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("UPDATE users SET last_login_at = now() WHERE id = $1", account.user_id)
        except Exception:
            log.exception("could not update last_login_at of user %s", account.user_id)
