"""Operations: /metrics in the Prometheus format with the cluster's figures, and the API's rate limits
(per IP, per user, per endpoint) through the real Redis, with the in-process fallback without it."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_ADDR
from tests.integration.api_client import ApiClient, Response
from tests.integration.conftest import MailSystem
from whymail.api.app import build_app
from whymail.api.context import ApiContext
from whymail.api.ratelimit import ApiRateLimiter, Limit, RateLimits
from whymail.api.tokens import load_secret
from whymail.db.pool import create_pool
from whymail.ratelimit import redis_client


def scrape(client: ApiClient, **kw) -> dict[str, list]:
    """/metrics parsed by prometheus_client's own parser: family name -> samples."""
    response = client.get("/metrics", **kw)
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.body.decode())}


def total(families: dict[str, list], sample_name: str) -> float:
    return sum(s.value for samples in families.values() for s in samples if s.name == sample_name)


def test_metrics_lists_the_cluster_series(mail_system: MailSystem):
    families = scrape(ApiClient(mail_system))
    for name in ("whymail_smtp_messages_accepted", "whymail_smtp_messages_rejected", "whymail_queue_depth",
                 "whymail_imap_sessions_open", "whymail_deliveries", "whymail_db_pool_size", "whymail_db_pool_idle",
                 "whymail_http_rate_limited", "whymail_component_up"):
        assert name in families, name
    up = {s.labels["component"]: s.value for s in families["whymail_component_up"]}
    assert up == {"smtp-gateway-0": 1.0, "imap-gateway-0": 1.0, "delivery-queue-0": 1.0, "postgres": 1.0}
    assert {s.labels["state"] for s in families["whymail_queue_depth"]} == {"pending", "sending", "deferred"}
    assert {s.labels["result"] for s in families["whymail_deliveries"]} == {"delivered", "deferred", "failed"}
    pool = {s.name: s.value for s in families["whymail_db_pool_size"] + families["whymail_db_pool_max"]}
    assert 1 <= pool["whymail_db_pool_size"] <= pool["whymail_db_pool_max"]


def test_smtp_counters_grow_with_each_delivery(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    before = scrape(client)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@example.org", alice, "counted"
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as smtp:
        assert smtp.send_message(message) == {}
        smtp.mail("bob@example.org")
        code, _ = smtp.rcpt(f"nobody@{domain}")
        assert code == 550
        smtp.rset()
    after = scrape(client)
    for counter in ("whymail_smtp_messages_accepted_total", "whymail_smtp_recipients_rejected_total"):
        assert total(after, counter) == total(before, counter) + 1, counter
    assert total(after, "whymail_smtp_sessions_total") >= total(before, "whymail_smtp_sessions_total") + 1
    assert len(mail_system.messages_of(alice)) == 1


def test_request_durations_are_a_histogram_by_route_and_status(mail_system: MailSystem):
    client = ApiClient(mail_system)
    assert client.get("/api/v1/healthz").status == 200
    assert client.post("/api/v1/auth/login", raw=b"{broken").status == 400
    families = scrape(client)
    samples = families["whymail_http_request_duration_seconds"]
    counts = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
              for s in samples if s.name.endswith("_count")}
    assert counts[("healthz", "GET", "200")] >= 1
    assert counts[("login", "POST", "400")] >= 1
    buckets = [s for s in samples if s.name.endswith("_bucket") and s.labels["route"] == "healthz"
               and s.labels["status"] == "200"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == counts[("healthz", "GET", "200")]


def test_metrics_through_a_proxy_need_an_admin_token(mail_system: MailSystem, domain: str):
    user, admin = f"user@{domain}", f"root@{domain}"
    mail_system.add_user(user)
    mail_system.add_user(admin)
    mail_system.fetch("UPDATE users SET role = 'admin' WHERE email = $1", admin)
    relayed = {"X-Forwarded-For": "198.51.100.7"}  # as if a reverse proxy on this machine passed it on
    client = ApiClient(mail_system)
    assert client.get("/metrics", headers=relayed).status == 401
    client.login(user)
    refused = client.get("/metrics", headers=relayed)
    assert refused.status == 403 and refused.json()["error"] == "forbidden"
    client.login(admin)
    assert "whymail_smtp_messages_accepted" in scrape(client, headers=relayed)


def test_every_api_response_carries_rate_limit_headers(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    first = client.get("/api/v1/healthz")
    second = client.get("/api/v1/healthz")
    for response in (first, second):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(response.headers)
        assert int(response.headers["x-ratelimit-limit"]) >= int(response.headers["x-ratelimit-remaining"]) >= 0
    client.login(alice)
    me = client.get("/api/v1/auth/me")
    assert me.status == 200 and int(me.headers["x-ratelimit-remaining"]) >= 0


# -- the limits themselves, on an app of this test process with tiny limits --------------------------


class LocalApi:
    """The API app served from a thread of the test process, on the test session's database; each
    test gives it a rate limiter of its own (`use`)."""

    def __init__(self, system: MailSystem) -> None:
        self._system = system
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        runtime = self._system.runtime
        self._pool = await create_pool(self._system.dsn, min_size=1, max_size=2)
        self.context = ApiContext(
            config=runtime.config, pool=self._pool, state_dir=Path(runtime.state_dir),
            secret=load_secret(runtime.config.auth.jwt_secret, Path(runtime.state_dir)),  # the cluster's
        )
        app = build_app(self.context, name=f"test_ops_{uuid.uuid4().hex[:8]}")
        app.config.TOUCHUP = False  # Sanic rewrites shared classes once per process: not for a second app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = await app.create_server(sock=sock, return_asyncio_server=True)
        await self._server.startup()
        await self._server.before_start()
        await self._server.after_start()

    async def _stop(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        await self._pool.close()

    def __enter__(self) -> LocalApi:
        self._thread.start()
        assert self._ready.wait(30), "the local API did not start"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def use(self, limiter: ApiRateLimiter) -> LocalApi:
        self.context.rate_limiter = limiter
        return self

    def client(self, token: str | None = None) -> ApiClient:
        client = ApiClient(self._system, token)
        client.base = f"http://127.0.0.1:{self.port}"
        return client


@pytest.fixture(scope="module")
def local_api(mail_system: MailSystem):
    with LocalApi(mail_system) as api:
        yield api


@pytest.fixture
def redis():
    """A client for the test's LocalApi (redis-py binds its connections to the loop that uses them
    first: the server thread's)."""
    return redis_client(REDIS_ADDR, db=15)


def assert_limited(response: Response, scope_words: str, limit: int) -> None:
    assert response.status == 429, response.body
    body = response.json()
    assert body["error"] == "rate_limited" and scope_words in body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"


def test_too_many_requests_from_one_address_get_429_with_retry_after(local_api: LocalApi, redis):
    prefix = f"whymail-test:{uuid.uuid4().hex}"
    limiter = ApiRateLimiter(RateLimits(ip=Limit(6, 3)), redis, prefix=prefix)  # a token every 10 s
    client = local_api.use(limiter).client()
    answers = [client.get("/api/v1/healthz") for _ in range(4)]
    assert [r.status for r in answers[:3]] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert_limited(answers[3], "your address", 3)
    assert answers[3].headers["retry-after"] == "10"
    assert limiter.redis_errors == 0 and limiter.refused["ip"] == 1
    assert asyncio.run(_keys(prefix)) == [f"{prefix}:ip:127.0.0.1"], "the bucket lives in Redis"


async def _keys(prefix: str) -> list[str]:
    client = redis_client(REDIS_ADDR, db=15)
    try:
        return sorted(key.decode() for key in await client.keys(f"{prefix}:*"))
    finally:
        await client.aclose()


def test_a_user_has_one_budget_whatever_the_token(
    mail_system: MailSystem, local_api: LocalApi, domain: str, redis
):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    cluster = ApiClient(mail_system)
    cluster.login(alice)
    api_token = cluster.post("/api/v1/auth/tokens", {"name": "script"}).json()["token"]
    limiter = ApiRateLimiter(RateLimits(user=Limit(6, 2)), redis, prefix=f"whymail-test:{uuid.uuid4().hex}")
    api = local_api.use(limiter)
    script = api.client(api_token)  # counted once authenticated
    assert [script.get("/api/v1/auth/me").status for _ in range(2)] == [200, 200]
    assert_limited(script.get("/api/v1/auth/me"), "this account", 2)
    browser = api.client(cluster.token)  # an access JWT: counted before the handler runs
    assert_limited(browser.get("/api/v1/auth/me"), "this account", 2)
    assert api.client().get("/api/v1/healthz").status == 200, "anonymous requests are not this user's"
    assert limiter.refused["user"] == 2


def test_a_route_with_its_own_limit_refuses_before_the_others(local_api: LocalApi, redis):
    limits = RateLimits(endpoints={"login": Limit(6, 2)})
    limiter = ApiRateLimiter(limits, redis, prefix=f"whymail-test:{uuid.uuid4().hex}")
    client = local_api.use(limiter).client()
    wrong = {"email": "nobody@example.org", "password": "x"}
    assert [client.post("/api/v1/auth/login", wrong).status for _ in range(2)] == [401, 401]
    assert_limited(client.post("/api/v1/auth/login", wrong), "this endpoint", 2)
    assert client.get("/api/v1/healthz").status == 200


def test_limits_keep_working_in_process_while_redis_is_unreachable(local_api: LocalApi):
    down = redis_client("127.0.0.1:1", db=15, timeout=0.2)  # nothing listens there
    limiter = ApiRateLimiter(RateLimits(ip=Limit(6, 3)), down, prefix="whymail-test:down")
    client = local_api.use(limiter).client()
    started = time.monotonic()
    families = scrape(client)  # the first request finds Redis away
    assert families["whymail_http_ratelimit_redis"][0].value == 0.0
    assert families["whymail_http_ratelimit_redis_errors"][0].value == 1.0
    answers = [client.get("/api/v1/healthz") for _ in range(3)]
    assert [r.status for r in answers] == [200, 200, 429], "no error because Redis is away; the limit holds"
    assert time.monotonic() - started < 5, "Redis is not waited for on every request"
    assert_limited(answers[2], "your address", 3)
    assert limiter.redis_errors == 1, "Redis is retried after a pause, not on every request"


def test_two_gateways_share_one_bucket_through_redis():
    prefix = f"whymail-test:{uuid.uuid4().hex}"
    limits = RateLimits(ip=Limit(1, 4))  # one token a minute: nothing refills during the test

    async def run() -> list[bool]:
        clients = [redis_client(REDIS_ADDR, db=15), redis_client(REDIS_ADDR, db=15)]
        first, second = (ApiRateLimiter(limits, c, prefix=prefix) for c in clients)
        answers = []
        for i in range(6):
            decision = await (first if i % 2 else second).check_request("192.0.2.50", None, None)
            answers.append(decision.allowed)
        assert (await first.check_request("192.0.2.51", None, None)).allowed
        assert first.redis_errors == second.redis_errors == 0
        for client in clients:
            await client.aclose()
        return answers

    assert asyncio.run(run()) == [True] * 4 + [False] * 2


def test_cache_hits_and_misses_are_reported(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    client.login(alice)

    def counts() -> dict[tuple[str, str], float]:
        families = scrape(ApiClient(mail_system))
        return {(s.labels["cache"], s.labels["result"]): s.value for s in families["whymail_cache_requests"]}

    before = counts()
    for _ in range(3):
        assert client.get("/api/v1/auth/me").status == 200
    after = counts()
    # The token was verified at its first use; the next requests found it (and its account) cached.
    assert after[("api_tokens", "hit")] >= before.get(("api_tokens", "hit"), 0) + 2
    assert after[("api_accounts", "hit")] >= before.get(("api_accounts", "hit"), 0) + 2
    assert ("api_mailbox_lists", "miss") in after
