"""Notifications other than new mail: how a submission fared in the outbound queue (email_sent,
email_failed, email_retry), a mailbox filling up (quota_warning), directory changes for the
people who manage them (domain_added, user_added), and what operators must know (system_alert: queue
entries given up, broadcasts by an admin).

The builders are pure; `store_quietly` and `store_in_background` write them (honouring each user's
preferences, see store.insert_notifications) and never raise: a notification is never a reason for a
delivery or a request to fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass

import asyncpg

from whymail.notify.events import LiveEvent
from whymail.notify.store import NewNotification, Notification, insert_notifications, notification_event

log = logging.getLogger(__name__)

QUOTA_THRESHOLDS = (80, 90, 100)  # percent of the quota
_tasks: set[asyncio.Task] = set()  # background writes, kept referenced until done

# Hands live events to the NotificationHub without waiting (an EventPublisher.publish).
Announce = Callable[[list[LiveEvent]], None]


# --- outbound queue --------------------------------------------------------------------------------

def _who(recipients: list[str]) -> str:
    if not recipients:
        return "(no recipients)"
    more = len(recipients) - 1
    return recipients[0] + (f" and {more} more" if more else "")


def queue_outcome(
    *, user_id: int | None, status: str, attempts: int, queue_id: int, delivery_id: str, recipients: list[str],
    recipient_domain: str, error: str | None,
) -> NewNotification | None:
    """The notification for the end of a delivery attempt of a queue row a user submitted: `sent`,
    `failed`/`dead`, or the first deferral. None for rows of no user (DSNs, forwards) and later retries."""
    if user_id is None:
        return None
    data = {"queue_id": queue_id, "delivery_id": delivery_id, "recipients": recipients,
            "recipient_domain": recipient_domain, "status": status, "attempts": attempts}
    if status == "sent":
        return NewNotification(user_id, "email_sent", f"Message delivered to {_who(recipients)}", "", data)
    if status in ("failed", "dead"):
        return NewNotification(user_id, "email_failed", f"Message to {_who(recipients)} could not be delivered",
                               error or "", data)
    if status == "deferred" and attempts == 1:
        return NewNotification(user_id, "email_retry",
                               f"Delivery to {_who(recipients)} is delayed; it will be retried", error or "", data)
    return None


# --- quota -----------------------------------------------------------------------------------------

def quota_threshold_crossed(before: int, after: int, quota: int) -> int | None:
    """The highest threshold (percent) that usage passed going from `before` to `after` bytes, if any.
    A threshold fires again only after usage fell below it: each crossing is one warning."""
    if quota <= 0 or after <= before:
        return None
    crossed = [t for t in QUOTA_THRESHOLDS if before * 100 < t * quota <= after * 100]
    return crossed[-1] if crossed else None


def quota_warning(user_id: int, percent: int, used: int, quota: int) -> NewNotification:
    title = "Your mailbox is full" if percent >= 100 else f"Your mailbox is {percent}% full"
    body = f"{used} of {quota} bytes used."
    if percent >= 100:
        body += " New mail is refused until you delete some."
    return NewNotification(user_id, "quota_warning", title, body,
                           {"percent": percent, "storage_used": used, "quota_bytes": quota})


# --- directory changes -------------------------------------------------------------------------------

async def admin_ids(conn: asyncpg.Connection) -> list[int]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM users WHERE role = 'admin' AND is_active")]


async def manager_ids(conn: asyncpg.Connection, domain_id: int) -> list[int]:
    """The admins and the owners of `domain_id`."""
    rows = await conn.fetch(
        """SELECT id FROM users WHERE is_active AND (role = 'admin' OR (role = 'owner' AND domain_id = $1))""",
        domain_id,
    )
    return [r["id"] for r in rows]


def domain_added(user_ids: Iterable[int], domain_id: int, domain: str, actor: str) -> list[NewNotification]:
    data = {"domain_id": domain_id, "domain": domain, "by": actor}
    return [NewNotification(u, "domain_added", f"Domain {domain} added", f"Added by {actor}.", data)
            for u in user_ids]


def user_added(
    user_ids: Iterable[int], new_user_id: int, email: str, domain_id: int, actor: str
) -> list[NewNotification]:
    data = {"user_id": new_user_id, "email": email, "domain_id": domain_id, "by": actor}
    return [NewNotification(u, "user_added", f"User {email} added", f"Added by {actor}.", data)
            for u in user_ids if u != new_user_id]


def _announce_stored(announce: Announce | None, stored: list[Notification]) -> None:
    if announce is not None and stored:
        try:
            announce([notification_event(n) for n in stored])
        except Exception as exc:
            log.warning("%d stored notifications not announced: %r", len(stored), exc)


async def notify_domain_added(
    pool: asyncpg.Pool, domain_id: int, domain: str, actor: str, announce: Announce | None = None
) -> None:
    """Tell every admin about a new domain, stored and announced live (never raises)."""
    try:
        async with pool.acquire() as conn:
            notes = domain_added(await admin_ids(conn), domain_id, domain, actor)
            stored = await asyncio.wait_for(insert_notifications(conn, notes), 10.0)
    except Exception as exc:
        log.error("domain_added notifications for %s not stored: %r", domain, exc)
        return
    _announce_stored(announce, stored)


async def notify_user_added(
    pool: asyncpg.Pool, new_user_id: int, email: str, domain_id: int, actor: str, announce: Announce | None = None
) -> None:
    """Tell the admins and the domain's owners about a new user, stored and announced live (never raises)."""
    try:
        async with pool.acquire() as conn:
            notes = user_added(await manager_ids(conn, domain_id), new_user_id, email, domain_id, actor)
            stored = await asyncio.wait_for(insert_notifications(conn, notes), 10.0)
    except Exception as exc:
        log.error("user_added notifications for %s not stored: %r", email, exc)
        return
    _announce_stored(announce, stored)


# --- system alerts ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeadEntry:
    """A queue entry given up (`dead`): what an operator needs to find it."""

    queue_id: int
    recipient_domain: str
    sender: str
    error: str | None


def system_alert(user_ids: Iterable[int], title: str, body: str, data: dict) -> list[NewNotification]:
    return [NewNotification(u, "system_alert", title, body, data) for u in user_ids]


async def dead_entries_in_queue(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM outbound_queue WHERE status = 'dead'")


def dead_letter_alerts(admins: Iterable[int], dead: list[DeadEntry], total: int) -> list[NewNotification]:
    """One `system_alert` per admin for queue entries that went dead together; `total` is how many dead
    entries the queue holds now (they wait there for an operator to retry or delete them)."""
    if not dead:
        return []
    domains = sorted({d.recipient_domain for d in dead})
    shown = ", ".join(domains[:5]) + (f" and {len(domains) - 5} more" if len(domains) > 5 else "")
    count = len(dead)
    title = f"{count} queue {'entry' if count == 1 else 'entries'} given up (dead)"
    body = (f"Delivery to {shown} was given up; {total} dead {'entry' if total == 1 else 'entries'} "
            "in the queue wait for a retry or a delete.")
    first_error = next((d.error for d in dead if d.error), None)
    if first_error:
        body += f" Last error: {first_error}"
    data = {"source": "queue", "count": count, "dead_total": total, "queue_ids": [d.queue_id for d in dead][:100],
            "recipient_domains": domains[:20]}
    return system_alert(admins, title, body, data)


async def broadcast_system_alert(conn: asyncpg.Connection, title: str, body: str, actor: str) -> list[Notification]:
    """A `system_alert` for every active admin (an operator's broadcast); returns the stored rows."""
    notes = system_alert(await admin_ids(conn), title, body, {"source": "broadcast", "by": actor})
    return await insert_notifications(conn, notes)


# --- storing -----------------------------------------------------------------------------------------

async def store_quietly(pool: asyncpg.Pool, items: list[NewNotification]) -> list[Notification]:
    """Insert notifications; on any error log it and return []."""
    if not items:
        return []
    try:
        async with pool.acquire() as conn:
            return await asyncio.wait_for(insert_notifications(conn, items), 10.0)
    except Exception as exc:
        log.error("%d notifications (%s) not stored: %r", len(items), items[0].type, exc)
        return []


def store_in_background(
    pool: asyncpg.Pool, items: list[NewNotification],
    then: Callable[[list[Notification]], None] | None = None,
) -> None:
    """Insert notifications without waiting (call on a running loop); `then(stored)` runs afterwards,
    e.g. to announce them as live events. Nothing here ever raises into the caller."""
    if not items:
        return

    async def run() -> None:
        stored = await store_quietly(pool, items)
        if stored and then is not None:
            try:
                then(stored)
            except Exception as exc:
                log.warning("stored notifications not announced: %r", exc)

    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def in_background(work: Coroutine[object, object, None]) -> None:
    """Run `work` (a coroutine that never raises) without waiting for it; call on a running loop."""
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
