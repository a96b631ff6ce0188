"""Failed-login lockouts against the real Redis and PostgreSQL, and through the IMAP gateway."""

from __future__ import annotations

import imaplib
import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from tests.conftest import REDIS_ADDR
from tests.integration.conftest import TEST_PASSWORD, MailSystem
from tests.integration.test_mailbox_ops import PASSWORD, make_user
from whymail.auth.lockout import GuardedAuthenticator, LoginGuard
from whymail.config import AuthConfig
from whymail.db.audit import LoginAudit
from whymail.db.pool import create_pool
from whymail.imap.pg_storage import PgAuthenticator
from whymail.imap.storage import Account
from whymail.ratelimit import redis_client


@pytest.fixture
async def env(pg_dsn: str) -> AsyncIterator[SimpleNamespace]:
    pool = await create_pool(pg_dsn, min_size=1, max_size=4)
    executor = ThreadPoolExecutor(4)
    redis = redis_client(REDIS_ADDR, db=15)
    assert await redis.ping()
    yield SimpleNamespace(pool=pool, executor=executor, redis=redis)
    await redis.aclose()
    await pool.close()
    executor.shutdown()


def _guarded(env: SimpleNamespace, config: AuthConfig, prefix: str) -> GuardedAuthenticator:
    guard = LoginGuard(
        max_per_ip=config.max_failures_per_ip, max_per_account=config.max_failures_per_account,
        window=config.failure_window, lockout=config.lockout_seconds, redis_client=env.redis, prefix=prefix,
    )
    inner = PgAuthenticator(env.pool, executor=env.executor)
    return GuardedAuthenticator(inner, guard, LoginAudit(env.pool), delay=config.login_failure_delay)


async def test_repeated_failures_lock_the_account_even_for_the_right_password(env, unique: str) -> None:
    email = f"lock@lk{unique}.test"
    user_id = await make_user(env, email)
    config = AuthConfig(login_failure_delay=0, max_failures_per_account=3)
    prefix = f"whymail-test:{uuid.uuid4().hex}:login"
    auth = _guarded(env, config, prefix)
    ip = "192.0.2.44"

    assert await auth.authenticate(email, PASSWORD, remote_ip=ip) == Account(user_id, email)
    for _ in range(3):
        assert await auth.authenticate(email, "wrong", remote_ip=ip) is None
    assert await auth.authenticate(email, PASSWORD, remote_ip="198.51.100.3") is None, "locked from any IP"
    # A second gateway sharing Redis sees the same lock.
    assert await _guarded(env, config, prefix).authenticate(email, PASSWORD, remote_ip=ip) is None
    assert await env.redis.ttl(f"{prefix}:lock:account:{email}") > 800

    async with env.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT action, actor_user_id, host(actor_ip) AS ip, details FROM audit_logs"
            " WHERE actor_email = $1 ORDER BY id", email,
        )
        last_login = await conn.fetchval("SELECT last_login_at FROM users WHERE id = $1", user_id)
    assert [r["action"] for r in rows] == ["login"] + ["login_failed"] * 3 + ["login_locked"] * 2
    assert rows[0]["actor_user_id"] == user_id and last_login is not None
    failed = rows[1]
    assert failed["ip"] == ip
    assert json.loads(failed["details"]) == {"username": email, "protocol": "imap", "reason": "bad credentials"}


async def test_success_resets_the_account_count(env, unique: str) -> None:
    email = f"reset@lk{unique}.test"
    await make_user(env, email)
    auth = _guarded(env, AuthConfig(login_failure_delay=0, max_failures_per_account=3),
                    f"whymail-test:{uuid.uuid4().hex}:login")
    for _ in range(2):
        assert await auth.authenticate(email, "wrong", remote_ip="192.0.2.45") is None
    assert await auth.authenticate(email, PASSWORD, remote_ip="192.0.2.45") is not None
    for _ in range(2):
        assert await auth.authenticate(email, "wrong", remote_ip="192.0.2.45") is None
    assert await auth.authenticate(email, PASSWORD, remote_ip="192.0.2.45") is not None


def test_gateway_audits_a_wrong_password(mail_system: MailSystem, domain: str) -> None:
    user = f"audited@{domain}"
    mail_system.add_user(user)
    client = imaplib.IMAP4("127.0.0.1", mail_system.cluster.imap_port, timeout=30)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(user, "not the password")
        typ, _ = client.login(user, TEST_PASSWORD)
        assert typ == "OK"
    finally:
        client.logout()
    rows = mail_system.fetch(
        "SELECT action, host(actor_ip) AS ip, details FROM audit_logs WHERE actor_email = $1 ORDER BY id", user
    )
    assert [r["action"] for r in rows] == ["login_failed", "login"]
    assert rows[0]["ip"] == "127.0.0.1"
    assert json.loads(rows[0]["details"])["username"] == user
