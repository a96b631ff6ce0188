"""LoginGuard in-process (injected clock) and GuardedAuthenticator with fake parts."""

from __future__ import annotations

from whymail.auth.lockout import GuardedAuthenticator, LoginGuard
from whymail.imap.session import Session
from whymail.imap.storage import Account
from whymail.ratelimit import ConnectionCounter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _guard(clock: Clock, **kw) -> LoginGuard:
    opts = {"max_per_ip": 5, "max_per_account": 3, "window": 60.0, "lockout": 300.0, "clock": clock}
    opts.update(kw)
    return LoginGuard(**opts)


async def test_account_is_locked_after_its_limit_and_unlocked_after_the_lockout() -> None:
    clock = Clock()
    guard = _guard(clock)
    assert await guard.failed("192.0.2.1", "Bob@Example.org") == []
    assert await guard.failed("192.0.2.2", "bob@example.org") == []
    assert await guard.locked("192.0.2.3", "bob@example.org") is None
    assert await guard.failed("192.0.2.3", " BOB@example.org") == ["account"]
    assert await guard.locked("198.51.100.9", "bob@example.org") == "account", "from any IP"
    assert await guard.locked("192.0.2.1", "alice@example.org") is None, "others are not locked"
    clock.now += 299
    assert await guard.locked("192.0.2.1", "bob@example.org") == "account"
    clock.now += 2
    assert await guard.locked("192.0.2.1", "bob@example.org") is None


async def test_ip_is_locked_after_failures_for_many_accounts() -> None:
    clock = Clock()
    guard = _guard(clock)
    for i in range(4):
        assert await guard.failed("203.0.113.5", f"user{i}@example.org") == []
    assert await guard.failed("203.0.113.5", "user9@example.org") == ["ip"]
    assert await guard.locked("203.0.113.5", "fresh@example.org") == "ip"
    assert await guard.locked("203.0.113.6", "fresh@example.org") is None


async def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    guard = _guard(clock)
    for _ in range(2):
        await guard.failed("192.0.2.1", "bob@example.org")
    clock.now += 61
    for _ in range(2):
        assert await guard.failed("192.0.2.1", "bob@example.org") == []
    assert await guard.locked("192.0.2.1", "bob@example.org") is None


async def test_success_clears_the_account_count_but_not_the_ip_count() -> None:
    clock = Clock()
    guard = _guard(clock)
    for _ in range(2):
        await guard.failed("192.0.2.1", "bob@example.org")
    await guard.succeeded("bob@example.org")
    for _ in range(2):
        assert await guard.failed("192.0.2.1", "bob@example.org") == []
    assert await guard.failed("192.0.2.1", "carol@example.org") == ["ip"], "5 failures from the IP in all"


async def test_unreachable_redis_falls_back_to_in_process_counts() -> None:
    from whymail.ratelimit import redis_client

    dead = redis_client("127.0.0.1:1", timeout=0.2)  # nothing listens on port 1
    clock = Clock()
    guard = _guard(clock, redis_client=dead)
    assert await guard.locked("192.0.2.1", "bob@example.org") is None
    for _ in range(2):
        await guard.failed("192.0.2.1", "bob@example.org")
    assert await guard.failed("192.0.2.1", "bob@example.org") == ["account"]
    assert await guard.locked("192.0.2.1", "bob@example.org") == "account"
    assert guard.redis_errors == 1, "Redis is retried only after the back-off"
    await dead.aclose()


class FakeAuth:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, username: str, password: str, *, remote_ip: str) -> Account | None:
        self.calls += 1
        return Account(7, "bob@example.org") if password == "right" else None


class FakeAudit:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    async def login_failed(self, username, ip, protocol, *, locked, reason) -> None:
        self.rows.append(("login_locked" if locked else "login_failed", username, ip, protocol))

    async def login_succeeded(self, account, ip, protocol) -> None:
        self.rows.append(("login", account.email, ip, protocol))


async def test_guarded_authenticator_delays_counts_locks_and_audits() -> None:
    clock = Clock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    inner, audit = FakeAuth(), FakeAudit()
    auth = GuardedAuthenticator(inner, _guard(clock), audit, delay=1.5, sleep=sleep)
    assert await auth.authenticate("bob@example.org", "right", remote_ip="192.0.2.1") == Account(7, "bob@example.org")
    assert sleeps == []
    for _ in range(3):
        assert await auth.authenticate("bob@example.org", "wrong", remote_ip="192.0.2.1") is None
    assert sleeps == [1.5] * 3
    calls = inner.calls
    assert await auth.authenticate("bob@example.org", "right", remote_ip="192.0.2.1") is None, "locked"
    assert inner.calls == calls, "the password is not even checked while locked"
    assert [r[0] for r in audit.rows] == ["login", "login_failed", "login_failed", "login_failed", "login_locked"]
    assert audit.rows[1] == ("login_failed", "bob@example.org", "192.0.2.1", "imap")


async def test_session_refuses_login_beyond_the_per_user_connection_limit() -> None:
    counter = ConnectionCounter(1, 100)
    first = Session(None, FakeAuth(), allow_plaintext_login=True, user_connections=counter)  # type: ignore[arg-type]
    second = Session(None, FakeAuth(), allow_plaintext_login=True, user_connections=counter)  # type: ignore[arg-type]
    ok = await first.handle(_login_cmd("a1"))
    assert ok[-1].status == "OK"
    refused = await second.handle(_login_cmd("b1"))
    assert refused[-1].status == "NO" and refused[-1].code.name == "LIMIT"
    assert second.account is None
    counter.release(str(first.account.user_id))
    assert (await second.handle(_login_cmd("b2")))[-1].status == "OK"


def _login_cmd(tag: str):
    from whymail.imap import commands as c

    return c.Login(tag, "bob@example.org", "right")
