"""Everything route handlers use, built by the HTTP gateway (no Ray objects leak into `whymail/api`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from whymail.api.mailbox_cache import MailboxListCache
from whymail.api.ratelimit import ApiRateLimiter
from whymail.config import Config
from whymail.metrics import HttpMetrics


@dataclass
class ApiContext:
    config: Config
    pool: asyncpg.Pool
    secret: str
    state_dir: Path
    # async (operation, user_id, *args) -> result: a mailbox write through the owning MailboxShard
    mailbox_op: Callable[..., Awaitable[Any]] | None = None
    # async () -> dict[str, bool]: readiness of the other parts (actors, Redis)
    readiness: Callable[[], Awaitable[dict[str, bool]]] | None = None
    # whymail.notify.fanout.LiveFeed: this gateway's subscriptions to the NotificationHub's events
    live: Any = None
    # async (data, sender, recipients, user_id) -> delivery id: the outbound queue
    queue_message: Callable[..., Awaitable[Any]] | None = None
    login_guard: Any = None  # whymail.auth.lockout.LoginGuard, shared with SMTP and IMAP
    # per IP / user / endpoint limits; the default keeps them in this process (no Redis)
    rate_limiter: ApiRateLimiter = field(default_factory=ApiRateLimiter)
    http_metrics: HttpMetrics = field(default_factory=HttpMetrics)
    # async () -> {"smtp" | "imap" | "queues": {actor name: its stats() or None}}, for /metrics
    cluster_stats: Callable[[], Awaitable[dict[str, dict[str, dict | None]]]] | None = None
    name: str = "http-gateway-0"  # this gateway, in metric labels
    # user id -> (Caller, monotonic expiry): the account behind a token, re-read every few seconds
    callers: dict = field(default_factory=dict)
    caller_cache_hits: int = 0
    caller_cache_misses: int = 0
    # user id -> the JSON of GET /mailboxes, dropped by the user's live events (build_app wires it to
    # `live` and to `mailbox_op`); without a live feed it caches nothing
    mailbox_cache: MailboxListCache = field(default_factory=lambda: MailboxListCache(None))
