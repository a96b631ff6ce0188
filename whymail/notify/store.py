"""SQL of `notifications` and `notification_preferences` (migration 002), and the folder counters
the live `folder_count` events carry. Every query is scoped by user id."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg
import orjson

from whymail.notify.events import NEW_MESSAGE, NOTIFICATION, LiveEvent, folder_count

NOTIFICATION_TYPES = (
    "new_email", "email_sent", "email_failed", "email_retry", "quota_warning", "domain_added", "user_added",
    "system_alert",
)
_COLUMNS = "id, user_id, type, title, body, data, is_read, read_at, created_at"


@dataclass(frozen=True, slots=True)
class NewNotification:
    user_id: int
    type: str
    title: str
    body: str = ""
    data: dict | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    user_id: int
    type: str
    title: str
    body: str
    data: dict
    is_read: bool
    read_at: dt.datetime | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Preference:
    type: str
    enabled: bool = True
    via_websocket: bool = True
    via_email: bool = False


def _notification(row: asyncpg.Record) -> Notification:
    data = row["data"]
    return Notification(**{**dict(row), "data": orjson.loads(data) if isinstance(data, str | bytes) else data})


async def folder_counts(conn: asyncpg.Connection, mailbox_ids: list[int]) -> list[LiveEvent]:
    """A `folder_count` event for each mailbox that still exists."""
    rows = await conn.fetch(
        """SELECT id, user_id, name, message_count, unseen_count FROM mailboxes
            WHERE id = ANY($1::bigint[]) ORDER BY id""",
        mailbox_ids,
    )
    return [folder_count(r["user_id"], r["id"], r["name"], r["message_count"], r["unseen_count"]) for r in rows]


async def insert_notifications(conn: asyncpg.Connection, items: list[NewNotification]) -> list[Notification]:
    """Store notifications in one statement, skipping the types a user turned off."""
    if not items:
        return []
    rows = await conn.fetch(
        f"""INSERT INTO notifications (user_id, type, title, body, data)
            SELECT n.user_id, n.type, n.title, n.body, n.data::jsonb
              FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
                   AS n(user_id, type, title, body, data)
             WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = n.user_id)
               AND NOT EXISTS (SELECT 1 FROM notification_preferences p
                                WHERE p.user_id = n.user_id AND p.type = n.type AND NOT p.enabled)
         RETURNING {_COLUMNS}""",
        [i.user_id for i in items], [i.type for i in items], [i.title[:500] for i in items],
        [i.body[:2000] for i in items], [orjson.dumps(i.data or {}).decode() for i in items],
    )
    return [_notification(r) for r in rows]


async def list_notifications(
    conn: asyncpg.Connection, user_id: int, *, unread_only: bool, limit: int, offset: int
) -> tuple[list[Notification], int, int]:
    """A page of the user's notifications, newest first; also the total matching and the unread count."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM notifications WHERE user_id = $1 AND (NOT $2 OR NOT is_read)
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4""",
        user_id, unread_only, limit, offset,
    )
    counts = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE NOT $2 OR NOT is_read) AS total, count(*) FILTER (WHERE NOT is_read) AS unread
             FROM notifications WHERE user_id = $1""",
        user_id, unread_only,
    )
    return [_notification(r) for r in rows], counts["total"], counts["unread"]


async def mark_read(conn: asyncpg.Connection, user_id: int, ids: list[int]) -> list[int]:
    """Mark the user's notifications among `ids` read; returns the ids that are the user's."""
    rows = await conn.fetch(
        """UPDATE notifications SET is_read = TRUE, read_at = coalesce(read_at, now())
            WHERE user_id = $1 AND id = ANY($2::bigint[]) RETURNING id""",
        user_id, ids,
    )
    return [r["id"] for r in rows]


async def mark_all_read(conn: asyncpg.Connection, user_id: int) -> int:
    """Mark every unread notification of the user read; returns how many."""
    status = await conn.execute(
        "UPDATE notifications SET is_read = TRUE, read_at = now() WHERE user_id = $1 AND NOT is_read", user_id
    )
    return int(status.split()[-1])


async def delete_notifications(conn: asyncpg.Connection, user_id: int, ids: list[int]) -> list[int]:
    """Delete the user's notifications among `ids`; returns the ids deleted."""
    rows = await conn.fetch(
        "DELETE FROM notifications WHERE user_id = $1 AND id = ANY($2::bigint[]) RETURNING id", user_id, ids
    )
    return [r["id"] for r in rows]


async def preferences(conn: asyncpg.Connection, user_id: int) -> list[Preference]:
    """One preference per notification type (the defaults where the user set none)."""
    rows = await conn.fetch(
        "SELECT type, enabled, via_websocket, via_email FROM notification_preferences WHERE user_id = $1", user_id
    )
    stored = {r["type"]: Preference(**dict(r)) for r in rows}
    return [stored.get(kind, Preference(type=kind)) for kind in NOTIFICATION_TYPES]


async def set_preferences(conn: asyncpg.Connection, user_id: int, prefs: list[Preference]) -> None:
    """Upsert the given preferences of the user."""
    await conn.executemany(
        """INSERT INTO notification_preferences (user_id, type, enabled, via_websocket, via_email)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, type) DO UPDATE SET enabled = EXCLUDED.enabled,
               via_websocket = EXCLUDED.via_websocket, via_email = EXCLUDED.via_email, updated_at = now()""",
        [(user_id, p.type, p.enabled, p.via_websocket, p.via_email) for p in prefs],
    )


def new_email_notifications(events: list[LiveEvent]) -> list[NewNotification]:
    """A `new_email` notification for each message delivered (not for APPENDs: those the user made)."""
    out = []
    for event in events:
        if event.type != NEW_MESSAGE or event.data.get("source") != "delivery":
            continue
        data = event.data
        sender = data.get("from") or "unknown sender"
        out.append(NewNotification(
            user_id=event.user_id, type="new_email", title=f"New message from {sender}",
            body=data.get("subject") or "(no subject)",
            data={"mailbox_id": data.get("mailbox_id"), "mailbox": data.get("mailbox"), "uid": data.get("uid"),
                  "message_id": data.get("message_id")},
        ))
    return out


def notification_event(note: Notification) -> LiveEvent:
    """The live `notification` event announcing a stored notification."""
    return LiveEvent(user_id=note.user_id, type=NOTIFICATION, data={
        "notification_id": note.id, "kind": note.type, "title": note.title, "body": note.body, "data": note.data,
    })
