"""SQL of the mail API's reads. Every query is scoped by the caller's `user_id`; values are parameters.

Message listing is keyset-paginated on (internal_date, id), so a page boundary never skips or
repeats a message while mail arrives or leaves between pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

MESSAGE_COLUMNS = """m.id, m.mailbox_id, m.uid, m.flags, m.subject, m.from_addr, m.to_addrs, m.cc_addrs,
    m.size, m.internal_date, m.sent_date, m.message_id, m.in_reply_to, m.references_hdr, m.thread_id,
    m.has_attachments, m.maildir_path, left(m.body_text, 200) AS preview"""


@dataclass(frozen=True, slots=True)
class MessageFilter:
    unread: bool | None = None
    flagged: bool | None = None
    has_attachment: bool | None = None
    from_contains: str | None = None
    subject_contains: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class PageKey:
    """The last row of the previous page: listing continues strictly after it."""

    internal_date: datetime
    id: int


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# What a list page shows (routes/mail.py `page_json`): no path, no threading headers.
SUMMARY_COLUMNS = """m.id, m.mailbox_id, m.uid, m.flags, m.subject, m.from_addr, m.to_addrs, m.cc_addrs,
    m.size, m.internal_date, m.sent_date, m.message_id, m.has_attachments, left(m.body_text, 200) AS preview"""


async def list_messages(
    conn: asyncpg.Connection, user_id: int, mailbox_id: int, filters: MessageFilter, *,
    descending: bool, after: PageKey | None, limit: int,
) -> list[asyncpg.Record] | None:
    """Up to `limit` messages of the mailbox matching `filters`, by (internal_date, id); None when the
    user has no mailbox `mailbox_id`.

    One round trip: the mailbox row scopes the query to the caller (a message's mailbox belongs to
    the message's user), and the page is a LATERAL subquery on `mailbox_id` alone, so the planner
    walks `messages_mailbox_date` and stops after `limit` rows. With `m.user_id = $1` beside it, it
    estimated the two conditions as independent (a handful of rows) and chose a bitmap AND of two
    indexes followed by a sort of the whole mailbox."""
    args: list[object] = [user_id, mailbox_id]
    where = ["m.mailbox_id = b.id"]

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.unread is not None:
        where.append(("NOT " if filters.unread else "") + "('\\Seen' = ANY(m.flags))")
    if filters.flagged is not None:
        where.append(("" if filters.flagged else "NOT ") + "('\\Flagged' = ANY(m.flags))")
    if filters.has_attachment is not None:
        where.append(f"m.has_attachments = {param(filters.has_attachment)}")
    if filters.from_contains:
        where.append(f"m.from_addr ILIKE {param(_like(filters.from_contains))}")
    if filters.subject_contains:
        where.append(f"m.subject ILIKE {param(_like(filters.subject_contains))}")
    if filters.since is not None:
        where.append(f"m.internal_date >= {param(filters.since)}")
    if filters.until is not None:
        where.append(f"m.internal_date < {param(filters.until)}")
    if after is not None:
        op = "<" if descending else ">"
        where.append(f"(m.internal_date, m.id) {op} ({param(after.internal_date)}, {param(after.id)})")
    order = "DESC" if descending else "ASC"
    query = (
        f"SELECT b.id AS owned_mailbox, page.* FROM mailboxes b LEFT JOIN LATERAL ("
        f"SELECT {SUMMARY_COLUMNS} FROM messages m WHERE {' AND '.join(where)} "
        f"ORDER BY m.internal_date {order}, m.id {order} LIMIT {param(limit)}"
        f") page ON true WHERE b.id = $2 AND b.user_id = $1"
    )
    rows = await conn.fetch(query, *args)
    if not rows:
        return None
    return [row for row in rows if row["id"] is not None]  # an empty page is one row of NULLs


async def message_by_id(conn: asyncpg.Connection, user_id: int, message_id: int) -> asyncpg.Record | None:
    """The caller's message row (with its mailbox's name and special use), or None."""
    return await conn.fetchrow(
        f"""SELECT {MESSAGE_COLUMNS}, b.name AS mailbox_name, b.special_use
              FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE m.id = $1 AND m.user_id = $2""",
        message_id, user_id,
    )


async def message_by_uid(conn: asyncpg.Connection, user_id: int, mailbox_id: int, uid: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.user_id = $1 AND m.mailbox_id = $2 AND m.uid = $3",
        user_id, mailbox_id, uid,
    )


async def thread_of(
    conn: asyncpg.Connection, user_id: int, row_id: int, thread_id: str, message_id: str, related_ids: list[str],
    limit: int = 200,
) -> list[asyncpg.Record]:
    """The message `row_id` and the user's messages in its thread: same thread key, the messages it
    names in In-Reply-To/References, and those that answer it; oldest first."""
    return await conn.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m
             WHERE m.user_id = $1
               AND (m.id = $6 OR (m.thread_id <> '' AND m.thread_id = $2)
                    OR (m.message_id <> '' AND m.message_id = ANY($4::text[]))
                    OR ($3 <> '' AND m.in_reply_to = $3))
             ORDER BY coalesce(m.sent_date, m.internal_date), m.id LIMIT $5""",
        user_id, thread_id, message_id, related_ids, limit, row_id,
    )


async def mailbox_by_special_use(conn: asyncpg.Connection, user_id: int, special_use: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, name FROM mailboxes WHERE user_id = $1 AND special_use = $2 ORDER BY id LIMIT 1",
        user_id, special_use,
    )


async def display_name(conn: asyncpg.Connection, user_id: int) -> str:
    return await conn.fetchval("SELECT display_name FROM users WHERE id = $1", user_id) or ""
