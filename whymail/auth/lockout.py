"""Failed-login throttling: delays, per-IP and per-account failure counts, and temporary lockouts.

`LoginGuard` counts failures in a fixed window per IP and per account and locks a key out for
`lockout_seconds` once it reaches its limit. With a Redis client the counts are shared by every
gateway (INCR + EXPIRE, a lock key with a TTL); when Redis is absent or fails, the same limits are
kept per process and Redis is retried after `retry_after` seconds (as `ConnectionRateLimiter` does).

`GuardedAuthenticator` wraps any `Authenticator` with the guard: a locked IP or account is refused
without checking the password (the client sees the same answer as for a wrong password), every
failure waits `delay` seconds, and every attempt is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from whymail.directory.addresses import normalize_address
from whymail.imap.storage import Account, Authenticator

log = logging.getLogger("whymail.auth.lockout")


def account_key(username: str) -> str:
    """The per-account counter key: the canonical address login itself resolves, so that other
    spellings of one account (case, IDNA, Unicode forms) share its counter."""
    try:
        return normalize_address(username)
    except ValueError:
        return username.strip().lower()


class LoginGuard:
    """Per-IP and per-account failure counters with lockouts; Redis-backed when a client is given."""

    def __init__(
        self,
        *,
        max_per_ip: int = 20,
        max_per_account: int = 10,
        window: float = 900.0,
        lockout: float = 900.0,
        redis_client=None,  # redis.asyncio.Redis or None
        prefix: str = "whymail:login",
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.time,
        max_keys: int = 100_000,
    ) -> None:
        self._limits = {"ip": max_per_ip, "account": max_per_account}
        self._window = window
        self._lockout = lockout
        self._redis = redis_client
        self._prefix = prefix
        self._retry_after = retry_after
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, window start)
        self._locks: dict[str, float] = {}  # key -> locked until
        self._redis_down_until = 0.0
        self.redis_errors = 0

    # --- public API ---------------------------------------------------------------------------

    async def locked(self, ip: str, username: str) -> str | None:
        """"ip" or "account" when that one is locked out now, else None."""
        keys = self._keys(ip, username)
        if self._use_redis():
            try:
                values = await self._redis.mget([self._lock_key(k) for _, k in keys])
                for (kind, _), value in zip(keys, values, strict=True):
                    if value is not None:
                        return kind
                return None
            except Exception:
                self._redis_failed()
        now = self._clock()
        for kind, key in keys:
            until = self._locks.get(key)
            if until is not None:
                if until > now:
                    return kind
                del self._locks[key]
        return None

    async def failed(self, ip: str, username: str) -> list[str]:
        """Count one failure for the IP and the account; the kinds ("ip", "account") now locked out."""
        keys = self._keys(ip, username)
        if self._use_redis():
            try:
                return await self._failed_redis(keys)
            except Exception:
                self._redis_failed()
        return self._failed_local(keys)

    async def succeeded(self, username: str) -> None:
        """A successful login clears the account's failure count (the IP's count stays)."""
        key = f"account:{account_key(username)}"
        self._failures.pop(key, None)
        if self._use_redis():
            try:
                await self._redis.delete(self._fail_key(key))
            except Exception:
                self._redis_failed()

    # --- internals ----------------------------------------------------------------------------

    def _keys(self, ip: str, username: str) -> list[tuple[str, str]]:
        return [("ip", f"ip:{ip}"), ("account", f"account:{account_key(username)}")]

    def _fail_key(self, key: str) -> str:
        return f"{self._prefix}:fail:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}:lock:{key}"

    def _use_redis(self) -> bool:
        return self._redis is not None and self._clock() >= self._redis_down_until

    def _redis_failed(self) -> None:
        self.redis_errors += 1
        self._redis_down_until = self._clock() + self._retry_after
        log.warning("login guard: Redis unavailable, counting failures in-process")

    async def _failed_redis(self, keys: list[tuple[str, str]]) -> list[str]:
        window = max(1, int(self._window))
        async with self._redis.pipeline(transaction=True) as pipe:
            for _, key in keys:
                pipe.set(self._fail_key(key), 0, ex=window, nx=True)  # opens the window (any Redis version)
                pipe.incr(self._fail_key(key))
            results = await pipe.execute()
        newly: list[str] = []
        for i, (kind, key) in enumerate(keys):
            if int(results[2 * i + 1]) >= self._limits[kind]:
                await self._redis.set(self._lock_key(key), "1", ex=max(1, int(self._lockout)))
                await self._redis.delete(self._fail_key(key))
                newly.append(kind)
        return newly

    def _failed_local(self, keys: list[tuple[str, str]]) -> list[str]:
        now = self._clock()
        if len(self._failures) >= self._max_keys:
            self._failures = {k: v for k, v in self._failures.items() if now - v[1] < self._window}
            if len(self._failures) >= self._max_keys:
                self._failures.clear()  # bounded memory under a flood of distinct keys
        if len(self._locks) >= self._max_keys:
            self._locks = {k: v for k, v in self._locks.items() if v > now}
        newly: list[str] = []
        for kind, key in keys:
            count, start = self._failures.get(key, (0, now))
            if now - start >= self._window:
                count, start = 0, now
            count += 1
            if count >= self._limits[kind]:
                self._locks[key] = now + self._lockout
                self._failures.pop(key, None)
                newly.append(kind)
            else:
                self._failures[key] = (count, start)
        return newly


class AuditSink(Protocol):
    async def login_failed(self, username: str, ip: str, protocol: str, *, locked: bool, reason: str) -> None:
        """Record a refused login (never raises)."""

    async def login_succeeded(self, account: Account, ip: str, protocol: str) -> None:
        """Record a login and stamp the user's last login time (never raises)."""


class GuardedAuthenticator:
    """An `Authenticator` with failure delays, lockouts and audit records around `inner`."""

    def __init__(
        self,
        inner: Authenticator,
        guard: LoginGuard,
        audit: AuditSink | None,
        *,
        delay: float = 1.0,
        protocol: str = "imap",
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._audit = audit
        self._delay = delay
        self._protocol = protocol
        self._sleep = sleep

    async def authenticate(self, username: str, password: str, *, remote_ip: str) -> Account | None:
        lock = await self._guard.locked(remote_ip, username)
        if lock is not None:
            # The client gets the same answer as for a wrong password; only the log says why.
            log.warning("%s login refused, %s locked out: user=%r ip=%s", self._protocol, lock, username, remote_ip)
            await self._record_failure(username, remote_ip, locked=True, reason=f"{lock} locked")
            await self._pause()
            return None
        account = await self._inner.authenticate(username, password, remote_ip=remote_ip)
        if account is None:
            newly = await self._guard.failed(remote_ip, username)
            for kind in newly:
                log.warning("%s lockout: %s locked after repeated failures: user=%r ip=%s",
                            self._protocol, kind, username, remote_ip)
            await self._record_failure(username, remote_ip, locked=False, reason="bad credentials")
            await self._pause()
            return None
        await self._guard.succeeded(username)
        if self._audit is not None:
            await self._audit.login_succeeded(account, remote_ip, self._protocol)
        return account

    async def _record_failure(self, username: str, ip: str, *, locked: bool, reason: str) -> None:
        if self._audit is not None:
            await self._audit.login_failed(username, ip, self._protocol, locked=locked, reason=reason)

    async def _pause(self) -> None:
        if self._delay > 0:
            await self._sleep(self._delay)
