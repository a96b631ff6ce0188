"""In-process rate limits: token buckets per key and concurrent-connection counters per key."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBuckets:
    """A token bucket per key: `rate` tokens per second, holding at most `burst`."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Take `cost` tokens from `key`'s bucket if it has them."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._buckets.clear()  # bounded memory under a flood of distinct keys
        self._buckets[key] = (tokens, now)
        return allowed


class ConnectionCounter:
    """Counts open connections per key against a limit."""

    def __init__(self, per_key: int, total: int) -> None:
        self._per_key = per_key
        self._total = total
        self._counts: dict[str, int] = {}
        self.open = 0

    def acquire(self, key: str) -> bool:
        """Count one more connection for `key`, unless a limit is reached."""
        if self.open >= self._total or self._counts.get(key, 0) >= self._per_key:
            return False
        self._counts[key] = self._counts.get(key, 0) + 1
        self.open += 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count <= 0:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count
        self.open = max(0, self.open - 1)


class ConnectionRateLimiter:
    """New connections per IP per minute, shared by every gateway through Redis when it is there.

    A fixed one-minute window counted with INCR in Redis; when Redis is absent or fails, the same
    limit is kept per process with a token bucket, and Redis is retried after `retry_after` seconds.
    """

    def __init__(
        self,
        per_minute: int,
        redis_client=None,  # redis.asyncio.Redis or None
        *,
        prefix: str = "whymail:connrate",
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_minute = per_minute
        self._redis = redis_client
        self._prefix = prefix
        self._retry_after = retry_after
        self._clock = clock
        self._fallback = TokenBuckets(per_minute / 60.0, per_minute)
        self._redis_down_until = 0.0
        self.redis_errors = 0

    async def allow(self, ip: str) -> bool:
        """Count a new connection from `ip`; False once it exceeds the per-minute limit."""
        now = self._clock()
        if self._redis is not None and now >= self._redis_down_until:
            window = int(now // 60)
            key = f"{self._prefix}:{ip}:{window}"
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, 120)
                    count, _ = await pipe.execute()
                return int(count) <= self._per_minute
            except Exception:  # Redis down: fall back to this process's own buckets
                self.redis_errors += 1
                self._redis_down_until = now + self._retry_after
        return self._fallback.allow(ip)


def redis_client(addr: str, *, db: int = 0, password: str = "", timeout: float = 0.5):
    """An asyncio Redis client for `host:port` with a blocking pool (a plain pool fails under load)."""
    import redis.asyncio as redis

    host, _, port = addr.rpartition(":")
    pool = redis.BlockingConnectionPool(
        host=host or "127.0.0.1", port=int(port or 6379), db=db, password=password or None,
        socket_timeout=timeout, socket_connect_timeout=timeout, max_connections=50, timeout=timeout,
    )
    return redis.Redis(connection_pool=pool)
