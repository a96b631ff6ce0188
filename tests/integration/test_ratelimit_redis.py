"""Connection-rate limits shared through the real Redis, and the in-process fallback without it."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import REDIS_ADDR
from whymail.ratelimit import ConnectionRateLimiter, redis_client


@pytest.fixture
async def redis():
    client = redis_client(REDIS_ADDR, db=15)
    assert await client.ping()
    yield client
    await client.aclose()


async def test_two_gateways_share_one_limit_through_redis(redis) -> None:
    prefix = f"whymail-test:{uuid.uuid4().hex}"
    first = ConnectionRateLimiter(5, redis, prefix=prefix, clock=lambda: 60_000.0)
    second = ConnectionRateLimiter(5, redis, prefix=prefix, clock=lambda: 60_000.0)
    answers = [await (first if i % 2 else second).allow("192.0.2.7") for i in range(8)]
    assert answers == [True] * 5 + [False] * 3
    assert await first.allow("192.0.2.8"), "another IP has its own budget"
    assert first.redis_errors == 0 and second.redis_errors == 0
    assert int(await redis.get(f"{prefix}:192.0.2.7:1000")) == 8


async def test_the_next_minute_starts_a_new_window(redis) -> None:
    prefix = f"whymail-test:{uuid.uuid4().hex}"
    now = [120.0]
    limiter = ConnectionRateLimiter(2, redis, prefix=prefix, clock=lambda: now[0])
    assert [await limiter.allow("ip") for _ in range(3)] == [True, True, False]
    now[0] = 180.0
    assert await limiter.allow("ip")


async def test_unreachable_redis_falls_back_to_in_process_limits() -> None:
    dead = redis_client("127.0.0.1:1", timeout=0.2)  # nothing listens on port 1
    limiter = ConnectionRateLimiter(3, dead, clock=lambda: 1000.0)
    answers = [await limiter.allow("198.51.100.1") for _ in range(5)]
    assert answers == [True, True, True, False, False]
    assert limiter.redis_errors == 1, "Redis is retried only after the back-off"
    await dead.aclose()
