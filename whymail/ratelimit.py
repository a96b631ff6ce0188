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
