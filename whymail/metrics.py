"""Prometheus figures: the HTTP request histogram this process observes, and the cluster's figures
(SMTP, IMAP, the outbound queue, database pools, rate limits) turned into metric families at scrape
time from what the actors report.

The cluster figures are read fresh at every scrape (a few calls, no cache): counters that live in an
actor restart from zero with it, which Prometheus' `rate()` handles.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST
QUEUE_STATES = ("pending", "sending", "deferred")  # rows still to deliver; sent/failed/dead are history
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Request durations of one HTTP gateway, in a registry of its own (one per app, so that tests
    can build several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.duration = Histogram(
            "whymail_http_request_duration_seconds", "HTTP request duration by route, method and status",
            ["route", "method", "status"], registry=self.registry, buckets=_DURATION_BUCKETS,
        )

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        # Unmatched paths share one label: a scanner must not create a series per URL it tries.
        self.duration.labels(route or "unmatched", method, str(status)).observe(max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """A database connection pool: connections open, idle among them, and the most it may open."""

    size: int
    idle: int
    max_size: int


@dataclass(slots=True)
class ClusterFigures:
    """Everything a scrape reports besides the HTTP histogram. An actor's entry is its `stats()`
    reply, or None when it did not answer in time."""

    smtp: dict[str, dict | None] = field(default_factory=dict)
    imap: dict[str, dict | None] = field(default_factory=dict)
    queues: dict[str, dict | None] = field(default_factory=dict)
    queue_depth: dict[str, int] | None = None  # None: the database did not answer
    pools: dict[str, PoolFigures] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)  # scope -> requests refused
    ratelimit_redis_errors: int = 0
    ratelimit_on_redis: bool | None = None  # None: no Redis configured
    caches: dict[str, tuple[int, int]] = field(default_factory=dict)  # cache -> (hits, misses), this gateway


async def queue_depth_by_state(conn) -> dict[str, int]:
    """Rows of `outbound_queue` waiting or being delivered, by status (every state present, 0 if none)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM outbound_queue WHERE status = ANY($1::text[]) GROUP BY status",
        list(QUEUE_STATES),
    )
    depth = dict.fromkeys(QUEUE_STATES, 0)
    depth.update({row["status"]: int(row["n"]) for row in rows})
    return depth


def _number(stats: dict, key: str) -> float:
    value = stats.get(key, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def cluster_families(figures: ClusterFigures) -> Iterator[Metric]:
    """The metric families of `figures`, in Prometheus' data model."""
    up = GaugeMetricFamily("whymail_component_up", "1 when the component answered this scrape", labels=["component"])
    for group in (figures.smtp, figures.imap, figures.queues):
        for name, stats in sorted(group.items()):
            up.add_metric([name], 1.0 if stats is not None else 0.0)
    up.add_metric(["postgres"], 1.0 if figures.queue_depth is not None else 0.0)
    yield up

    smtp = {name: stats for name, stats in sorted(figures.smtp.items()) if stats is not None}
    sessions_open = GaugeMetricFamily("whymail_smtp_sessions_open", "SMTP sessions open", labels=["gateway"])
    sessions = CounterMetricFamily("whymail_smtp_sessions", "SMTP sessions started", labels=["gateway"])
    accepted = CounterMetricFamily("whymail_smtp_messages_accepted", "Messages accepted (250 after DATA)",
                                   labels=["gateway"])
    rejected = CounterMetricFamily("whymail_smtp_messages_rejected", "Messages refused after DATA",
                                   labels=["gateway"])
    recipients = CounterMetricFamily("whymail_smtp_recipients_rejected", "RCPT TO refused", labels=["gateway"])
    replies = CounterMetricFamily("whymail_smtp_replies", "Counted SMTP replies by code",
                                  labels=["gateway", "code", "enhanced"])
    for name, stats in smtp.items():
        sessions_open.add_metric([name], _number(stats, "sessions_open"))
        sessions.add_metric([name], _number(stats, "sessions"))
        accepted.add_metric([name], _number(stats, "accepted"))
        rejected.add_metric([name], _number(stats, "refused"))
        recipients.add_metric([name], _number(stats, "recipients_refused"))
        for reply, count in sorted((stats.get("replies") or {}).items()):
            code, _, enhanced = str(reply).partition(" ")
            replies.add_metric([name, code, enhanced], float(count))
    yield from (sessions_open, sessions, accepted, rejected, recipients, replies)

    imap_open = GaugeMetricFamily("whymail_imap_sessions_open", "IMAP connections open", labels=["gateway"])
    imap_auth = GaugeMetricFamily("whymail_imap_sessions_authenticated", "IMAP sessions logged in",
                                  labels=["gateway"])
    for name, stats in sorted(figures.imap.items()):
        if stats is not None:
            imap_open.add_metric([name], _number(stats, "sessions_open"))
            imap_auth.add_metric([name], _number(stats, "sessions_authenticated"))
    yield from (imap_open, imap_auth)

    deliveries = CounterMetricFamily("whymail_deliveries", "Outbound delivery attempts by result",
                                     labels=["queue", "result"])
    dsns = CounterMetricFamily("whymail_dsns_sent", "Delivery status notifications sent", labels=["queue"])
    rounds = CounterMetricFamily("whymail_queue_rounds", "Delivery rounds run", labels=["queue"])
    for name, stats in sorted(figures.queues.items()):
        if stats is None:
            continue
        for result in ("delivered", "deferred", "failed"):
            deliveries.add_metric([name, result], _number(stats, result))
        dsns.add_metric([name], _number(stats, "dsns"))
        rounds.add_metric([name], _number(stats, "rounds"))
    yield from (deliveries, dsns, rounds)

    if figures.queue_depth is not None:
        depth = GaugeMetricFamily("whymail_queue_depth", "Outbound queue rows by state", labels=["state"])
        for state, count in sorted(figures.queue_depth.items()):
            depth.add_metric([state], float(count))
        yield depth

    pool_size = GaugeMetricFamily("whymail_db_pool_size", "Database connections open", labels=["pool"])
    pool_idle = GaugeMetricFamily("whymail_db_pool_idle", "Database connections idle", labels=["pool"])
    pool_max = GaugeMetricFamily("whymail_db_pool_max", "Database connections the pool may open", labels=["pool"])
    for name, pool in sorted(figures.pools.items()):
        pool_size.add_metric([name], float(pool.size))
        pool_idle.add_metric([name], float(pool.idle))
        pool_max.add_metric([name], float(pool.max_size))
    yield from (pool_size, pool_idle, pool_max)

    cache = CounterMetricFamily("whymail_cache_requests", "Cache look-ups of this gateway, by cache and result",
                                labels=["cache", "result"])
    for name, (hits, misses) in sorted(figures.caches.items()):
        cache.add_metric([name, "hit"], float(hits))
        cache.add_metric([name, "miss"], float(misses))
    yield cache

    limited = CounterMetricFamily("whymail_http_rate_limited", "API requests refused with 429, by the bucket",
                                  labels=["scope"])
    for scope, count in sorted(figures.rate_limited.items()):
        limited.add_metric([scope], float(count))
    yield limited
    yield CounterMetricFamily("whymail_http_ratelimit_redis_errors",
                              "Rate-limit checks that found Redis unavailable", value=figures.ratelimit_redis_errors)
    if figures.ratelimit_on_redis is not None:
        yield GaugeMetricFamily("whymail_http_ratelimit_redis", "1 while rate limits are shared through Redis",
                                value=1.0 if figures.ratelimit_on_redis else 0.0)


class _Families:
    """A one-scrape collector (prometheus_client only asks for `collect()`)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


def render(figures: ClusterFigures, http: HttpMetrics) -> bytes:
    """The whole scrape in the Prometheus text format."""
    return generate_latest(_Families(cluster_families(figures))) + generate_latest(http.registry)
