"""API rate limits without Redis: the in-process buckets, the header figures, and the fallback when
the configured Redis cannot be reached."""

from __future__ import annotations

import jwt
import pytest

from whymail.api import tokens
from whymail.api.ratelimit import (
    ApiRateLimiter,
    Bucket,
    Limit,
    LocalBuckets,
    RateLimits,
    bearer_user,
    decide,
    refusal_message,
)
from whymail.ratelimit import redis_client


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_bucket_empties_after_its_burst_and_refills_at_its_rate():
    clock = Clock()
    local = LocalBuckets(clock=clock)
    bucket = [Bucket("ip", "ip:a", Limit(per_minute=60, burst=3))]  # one token a second
    assert [local.take(bucket)[0] for _ in range(4)] == [True, True, True, False]
    clock.now += 1.0
    assert local.take(bucket) == (True, [0.0])
    assert local.take(bucket)[0] is False
    clock.now += 100.0
    allowed, levels = local.take(bucket)
    assert allowed and levels == [2.0], "a bucket never holds more than its burst"


def test_a_request_takes_from_every_bucket_or_from_none():
    clock = Clock()
    local = LocalBuckets(clock=clock)
    ip = Bucket("ip", "ip:a", Limit(60, 10))
    user = Bucket("user", "user:7", Limit(60, 1))
    assert local.take([ip, user]) == (True, [9.0, 0.0])
    assert local.take([ip, user]) == (False, [9.0, 0.0]), "the refused request did not cost the IP a token"
    assert local.take([Bucket("ip", "ip:b", Limit(60, 10)), user])[0] is False, "the user's bucket is shared"


def test_headers_describe_the_emptiest_bucket_and_the_refusing_one():
    ip = Bucket("ip", "ip:a", Limit(600, 100))  # 10 tokens a second
    user = Bucket("user", "user:1", Limit(60, 5))  # 1 a second
    allowed = decide([ip, user], [40.0, 2.5], True)
    assert allowed.headers() == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "3"}
    refused = decide([ip, user], [40.0, 0.25], False)
    assert not refused.allowed and refused.scope == "user"
    headers = refused.headers()
    assert headers["Retry-After"] == "1" and headers["X-RateLimit-Remaining"] == "0"
    assert refusal_message(refused) == "too many requests for this account, slow down"
    assert allowed.tighter(refused) is refused and refused.tighter(allowed) is refused


async def test_routes_with_their_own_limit_get_an_endpoint_bucket_keyed_by_the_client():
    clock = Clock()
    limits = RateLimits(ip=Limit(6000, 1000), user=Limit(6000, 1000), endpoints={"login": Limit(60, 2)})
    limiter = ApiRateLimiter(limits, clock=clock)
    login = [await limiter.check_request("192.0.2.1", None, "login") for _ in range(3)]
    assert [d.allowed for d in login] == [True, True, False]
    assert login[2].scope == "endpoint" and limiter.refused["endpoint"] == 1
    assert (await limiter.check_request("192.0.2.2", None, "login")).allowed, "another IP has its own bucket"
    assert (await limiter.check_request("192.0.2.1", None, "me")).allowed, "other routes are not affected"
    assert [b.key for b in limiter.buckets_for_user(5, "login")] == ["user:5", "ep:login:user:5"]


async def test_unreachable_redis_falls_back_to_in_process_limits_and_is_retried_later():
    clock = Clock()
    down = redis_client("127.0.0.1:1", db=15, timeout=0.2)  # nothing listens on port 1
    limiter = ApiRateLimiter(RateLimits(ip=Limit(60, 2)), down, prefix="whymail-test:down", clock=clock,
                             retry_after=5.0)
    answers = [(await limiter.check_request("192.0.2.9", None, None)).allowed for _ in range(3)]
    assert answers == [True, True, False], "the limit still holds without Redis"
    assert limiter.redis_errors == 1, "Redis is not asked again until retry_after has passed"
    assert not limiter.using_redis and limiter.has_redis
    clock.now += 5.0
    assert limiter.using_redis
    assert (await limiter.check_request("192.0.2.9", None, None)).allowed  # refilled 5 tokens, capped at 2
    assert limiter.redis_errors == 2, "after retry_after the limiter tried Redis again"
    await down.aclose()


def test_bearer_user_reads_access_jwts_only():
    secret = "s" * 48
    caller = tokens.Caller(user_id=42, email="a@b.test", role="user", domain_id=1, domain="b.test")
    access = tokens.issue_access_token(secret, caller, 60)
    assert bearer_user(secret, f"Bearer {access}") == 42
    assert bearer_user("another secret" * 4, f"Bearer {access}") is None
    assert bearer_user(secret, "Bearer wm_abcdef") is None, "API tokens need the database"
    assert bearer_user(secret, f"Basic {access}") is None
    forged = jwt.encode({"sub": "42", "exp": 9_999_999_999, "typ": "access"}, "x" * 48, algorithm="HS256")
    assert bearer_user(secret, f"Bearer {forged}") is None


def test_a_limit_must_let_something_through():
    with pytest.raises(ValueError):
        Limit(0, 10)
    with pytest.raises(ValueError):
        Limit(60, 0)
