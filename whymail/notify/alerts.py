"""Notifications other than new mail: how a submission fared in the outbound queue (email_sent,
email_failed, email_retry), a mailbox filling up (quota_warning), and directory changes for the
people who manage them (domain_added, user_added).

The builders are pure; `store_quietly` and `store_in_background` write them (honouring each user's
preferences, see store.insert_notifications) and never raise: a notification is never a reason for a
delivery or a request to fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import asyncpg

from whymail.notify.store import NewNotification, Notification, insert_notifications

log = logging.getLogger(__name__)

QUOTA_THRESHOLDS = (80, 90, 100)  # percent of the quota
_tasks: set[asyncio.Task] = set()  # background writes, kept referenced until done


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


async def notify_domain_added(pool: asyncpg.Pool, domain_id: int, domain: str, actor: str) -> None:
    """Tell every admin about a new domain (never raises)."""
    try:
        async with pool.acquire() as conn:
            await insert_notifications(conn, domain_added(await admin_ids(conn), domain_id, domain, actor))
    except Exception as exc:
        log.error("domain_added notifications for %s not stored: %r", domain, exc)


async def notify_user_added(pool: asyncpg.Pool, new_user_id: int, email: str, domain_id: int, actor: str) -> None:
    """Tell the admins and the domain's owners about a new user (never raises)."""
    try:
        async with pool.acquire() as conn:
            managers = await manager_ids(conn, domain_id)
            await insert_notifications(conn, user_added(managers, new_user_id, email, domain_id, actor))
    except Exception as exc:
        log.error("user_added notifications for %s not stored: %r", email, exc)


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
