"""API rate limits: token buckets per IP, per user and per endpoint, shared through Redis.

Each request is checked against a few buckets at once (its IP, its user, and the route's own
bucket when the route has one). The check is one Lua script, so it is atomic across gateways: a
request takes a token from every bucket or from none. When Redis is absent or fails, the same
limits are kept per process and Redis is tried again `retry_after` seconds later; a request is
never refused because Redis is away.

A bucket holds at most `burst` tokens and refills at `per_minute / 60` tokens a second. The
`X-RateLimit-*` headers describe the bucket closest to empty: `Limit` is its size, `Remaining`
the whole tokens left, `Reset` the seconds until it is full again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from whymail.api import tokens

log = logging.getLogger("whymail.http.ratelimit")

# Defaults until the configuration has keys for them (limits.api_*). Every client of the test
# suite is 127.0.0.1, and a browser session fires bursts of requests: the buckets are generous and
# the sustained rates are what stops a flood.
IP_PER_MINUTE = 6000
IP_BURST = 1000
USER_PER_MINUTE = 3000
USER_BURST = 500
# Routes that cost more than a read (a bcrypt check, a token rotation): their own bucket, keyed by
# the client (IP before login, user after), on top of the IP and user buckets.
ENDPOINT_LIMITS: dict[str, tuple[int, int]] = {
    "login": (300, 100),
    "refresh": (600, 100),
}
REDIS_RETRY_AFTER = 5.0
REDIS_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class Limit:
    """`per_minute` tokens a minute, at most `burst` saved up."""

    per_minute: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_minute > 0 and burst >= 1")

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Every API limit; `endpoints` maps a route name (the handler's name) to its own limit."""

    ip: Limit = Limit(IP_PER_MINUTE, IP_BURST)
    user: Limit = Limit(USER_PER_MINUTE, USER_BURST)
    endpoints: dict[str, Limit] = field(
        default_factory=lambda: {name: Limit(*pair) for name, pair in ENDPOINT_LIMITS.items()}
    )


def api_limits(limits) -> RateLimits:
    """The limits of `config.limits` (a whymail.config.LimitsConfig)."""
    logins = limits.api_logins_per_minute
    return RateLimits(
        ip=Limit(limits.api_requests_per_minute_ip, limits.api_burst_ip),
        user=Limit(limits.api_requests_per_minute_user, limits.api_burst_user),
        endpoints={**RateLimits().endpoints, "login": Limit(logins, max(1, logins // 3))},
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket a request draws from: `scope` names it in metrics and in the 429 message."""

    scope: str  # "ip", "user" or "endpoint"
    key: str
    limit: Limit


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a check and what the headers say about it."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the tightest bucket is full again
    retry_after: int = 0  # when refused: seconds until a token is there
    scope: str = ""  # when refused: the scope of the bucket that refused

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def tighter(self, other: Decision | None) -> Decision:
        """Of two decisions for one request, the one the client must heed (a refusal, else fewer left)."""
        if other is None:
            return self
        if self.allowed != other.allowed:
            return other if not other.allowed else self
        return other if other.remaining < self.remaining else self


def decide(buckets: list[Bucket], levels: list[float], allowed: bool, cost: float = 1.0) -> Decision:
    """The decision for `buckets` whose token counts are now `levels` (after taking them if allowed).

    Allowed: the headers describe the bucket with the fewest tokens left. Refused: the bucket that
    refused and needs the longest to refill decides `Retry-After`."""
    indexes = range(len(buckets))
    if allowed:
        tightest = min(indexes, key=lambda i: levels[i])
    else:
        short = [i for i in indexes if levels[i] < cost] or list(indexes)
        tightest = max(short, key=lambda i: (cost - levels[i]) / buckets[i].limit.rate)
    bucket, level = buckets[tightest], max(0.0, levels[tightest])
    limit = bucket.limit
    reset = max(0, math.ceil((limit.burst - level) / limit.rate))
    if allowed:
        return Decision(True, int(limit.burst), int(level), reset)
    retry = max(1, math.ceil((cost - level) / limit.rate))
    return Decision(False, int(limit.burst), int(level), reset, retry, bucket.scope)


class LocalBuckets:
    """The in-process fallback: the same buckets in a dict, bounded in size."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, buckets: list[Bucket], cost: float = 1.0) -> tuple[bool, list[float]]:
        """Take `cost` from every bucket if each has it; returns (allowed, the levels afterwards)."""
        now = self._clock()
        levels = []
        for bucket in buckets:
            level, last = self._state.get(bucket.key, (bucket.limit.burst, now))
            levels.append(min(bucket.limit.burst, level + max(0.0, now - last) * bucket.limit.rate))
        allowed = all(level >= cost for level in levels)
        if allowed:
            levels = [level - cost for level in levels]
        if len(self._state) + len(buckets) > self._max_keys:
            self._state.clear()  # bounded memory under a flood of distinct keys
        for bucket, level in zip(buckets, levels, strict=True):
            self._state[bucket.key] = (level, now)
        return allowed, levels


# KEYS: the buckets. ARGV: now (seconds), cost, then rate and burst of each bucket.
# Returns {allowed, level of each bucket as a string} (a Lua number would be truncated to an integer).
_TAKE_SCRIPT = """
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local levels = {}
local allowed = 1
for i = 1, #KEYS do
  local rate = tonumber(ARGV[1 + 2 * i])
  local burst = tonumber(ARGV[2 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = tonumber(state[1])
  local at = tonumber(state[2])
  if level == nil or at == nil then
    level = burst
  elseif now > at then
    level = math.min(burst, level + (now - at) * rate)
  end
  levels[i] = level
  if level < cost then allowed = 0 end
end
local reply = {allowed}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[1 + 2 * i])
  local burst = tonumber(ARGV[2 + 2 * i])
  if allowed == 1 then levels[i] = levels[i] - cost end
  redis.call('HSET', KEYS[i], 'level', tostring(levels[i]), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[i], math.ceil(burst / rate) + 1)  -- full again: the key may go
  reply[i + 1] = tostring(levels[i])
end
return reply
"""


class ApiRateLimiter:
    """Checks requests against the buckets of `limits`, in Redis when it is there."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        redis_client=None,  # redis.asyncio.Redis or None
        *,
        prefix: str = "whymail:api:rl",
        retry_after: float = REDIS_RETRY_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or RateLimits()
        self._redis = redis_client
        self._prefix = prefix
        self._retry_after = retry_after
        self._clock = clock
        self._script = redis_client.register_script(_TAKE_SCRIPT) if redis_client is not None else None
        self._local = LocalBuckets(clock=clock)
        self._redis_down_until = 0.0
        self.redis_errors = 0
        self.refused: dict[str, int] = {"ip": 0, "user": 0, "endpoint": 0}

    @property
    def has_redis(self) -> bool:
        return self._script is not None

    @property
    def using_redis(self) -> bool:
        return self._script is not None and self._clock() >= self._redis_down_until

    def buckets_for_ip(self, ip: str, route: str | None) -> list[Bucket]:
        buckets = [Bucket("ip", f"ip:{ip}", self.limits.ip)]
        endpoint = self.limits.endpoints.get(route or "")
        if endpoint is not None:
            buckets.append(Bucket("endpoint", f"ep:{route}:ip:{ip}", endpoint))
        return buckets

    def buckets_for_user(self, user_id: int, route: str | None) -> list[Bucket]:
        buckets = [Bucket("user", f"user:{user_id}", self.limits.user)]
        endpoint = self.limits.endpoints.get(route or "")
        if endpoint is not None:
            buckets.append(Bucket("endpoint", f"ep:{route}:user:{user_id}", endpoint))
        return buckets

    async def check_request(self, ip: str, user_id: int | None, route: str | None) -> Decision:
        """One check for a request: its IP's buckets, and its user's when the user is known already."""
        buckets = self.buckets_for_ip(ip, route)
        if user_id is not None:
            buckets += self.buckets_for_user(user_id, route)
        return await self.check(buckets)

    async def check(self, buckets: list[Bucket], cost: float = 1.0) -> Decision:
        """Take `cost` tokens from every bucket, or from none when one of them lacks them."""
        allowed, levels = await self._take(buckets, cost)
        decision = decide(buckets, levels, allowed, cost)
        if not allowed:
            self.refused[decision.scope] = self.refused.get(decision.scope, 0) + 1
        return decision

    async def _take(self, buckets: list[Bucket], cost: float) -> tuple[bool, list[float]]:
        now = self._clock()
        if self._script is not None and now >= self._redis_down_until:
            keys = [f"{self._prefix}:{bucket.key}" for bucket in buckets]
            args: list[float] = [now, cost]
            for bucket in buckets:
                args += [bucket.limit.rate, bucket.limit.burst]
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    reply = await self._script(keys=keys, args=args)
                return bool(int(reply[0])), [float(level) for level in reply[1:]]
            except Exception as exc:  # Redis away: this process keeps the limits until it is back
                self.redis_errors += 1
                self._redis_down_until = now + self._retry_after
                log.warning("rate limits: Redis unavailable (%r); in-process limits for %.0f s",
                            exc, self._retry_after)
        return self._local.take(buckets, cost)


_REFUSALS = {
    "ip": "too many requests from your address, slow down",
    "user": "too many requests for this account, slow down",
    "endpoint": "too many requests to this endpoint, slow down",
}


def refusal_message(decision: Decision) -> str:
    return _REFUSALS.get(decision.scope, "too many requests, slow down")


def route_name(request) -> str | None:
    """The name of the route a Sanic request matched (the handler's name), or None."""
    route = getattr(request, "route", None)
    if route is None:
        return None
    return route.name.rsplit(".", 1)[-1]


def bearer_user(secret: str, authorization: str) -> int | None:
    """The user id of an access JWT in an Authorization header, without a database look-up (API
    tokens need one: those callers are counted once authenticated)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token.startswith(tokens.API_TOKEN_PREFIX):
        return None
    return tokens.decode_access_token(secret, token)
