"""SQL of the mail store's write path: mailbox lookup, UID reservation, batched message inserts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class MailboxRef:
    id: int
    user_id: int
    name: str


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One row of `messages` as inserted by a delivery (uid/modseq filled in by reserve_uids)."""

    mailbox_id: int
    user_id: int
    uid: int
    modseq: int
    delivery_id: uuid.UUID
    maildir_path: str
    size: int
    flags: list[str]
    internal_date: datetime
    message_id: str | None
    subject: str
    from_addr: str
    to_addrs: str
    cc_addrs: str
    envelope_from: str
    sent_date: datetime | None
    in_reply_to: str | None
    references_hdr: str | None
    thread_id: str | None
    has_attachments: bool
    body_text: str


async def mailboxes_of_users(conn: asyncpg.Connection, user_ids: list[int]) -> list[MailboxRef]:
    """Every mailbox of the given users."""
    rows = await conn.fetch("SELECT id, user_id, name FROM mailboxes WHERE user_id = ANY($1::bigint[])", user_ids)
    return [MailboxRef(r["id"], r["user_id"], r["name"]) for r in rows]


async def storage_used(conn: asyncpg.Connection, user_ids: list[int]) -> dict[int, int]:
    """Bytes stored per user."""
    rows = await conn.fetch("SELECT id, storage_used FROM users WHERE id = ANY($1::bigint[])", user_ids)
    return {r["id"]: r["storage_used"] for r in rows}


async def delivered_already(
    conn: asyncpg.Connection, keys: list[tuple[int, uuid.UUID]]
) -> dict[tuple[int, uuid.UUID], int]:
    """Of (mailbox_id, delivery_id) pairs, those already stored, with their UID (idempotent retries)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT m.mailbox_id, m.delivery_id, m.uid
             FROM messages m
             JOIN unnest($1::bigint[], $2::uuid[]) AS k(mailbox_id, delivery_id)
               ON m.mailbox_id = k.mailbox_id AND m.delivery_id = k.delivery_id""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["mailbox_id"], r["delivery_id"]): r["uid"] for r in rows}


async def apply_delivery(
    conn: asyncpg.Connection,
    mailbox_deltas: dict[int, tuple[int, int, int]],
    user_deltas: dict[int, tuple[int, int]],
) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
    """Reserve UIDs and count the new messages, in one statement.

    `mailbox_deltas`: mailbox id -> (messages, unseen, bytes); `user_deltas`: user id -> (messages,
    bytes). Returns (mailbox id -> (first reserved UID, new MODSEQ), user id -> storage used).
    Runs inside the delivery transaction: the row locks serialise concurrent writers, and a rollback
    gives the UIDs back, so UIDs stay strictly ascending and are never reused (RFC 3501 §2.3.1.1).
    """
    rows = await conn.fetch(
        """WITH mb AS (
               UPDATE mailboxes AS m
                  SET uidnext = m.uidnext + d.n, highestmodseq = m.highestmodseq + 1,
                      message_count = m.message_count + d.n, unseen_count = m.unseen_count + d.unseen,
                      total_size = m.total_size + d.bytes
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS d(id, n, unseen, bytes)
                WHERE m.id = d.id
            RETURNING m.id, m.uidnext - d.n AS first_uid, m.highestmodseq AS modseq),
           us AS (
               UPDATE users AS u
                  SET message_count = u.message_count + d.n, storage_used = u.storage_used + d.bytes
                 FROM unnest($5::bigint[], $6::bigint[], $7::bigint[]) AS d(id, n, bytes)
                WHERE u.id = d.id
            RETURNING u.id, u.storage_used)
         SELECT TRUE AS is_mailbox, id, first_uid AS a, modseq AS b FROM mb
         UNION ALL
         SELECT FALSE, id, storage_used, 0 FROM us""",
        list(mailbox_deltas),
        [v[0] for v in mailbox_deltas.values()],
        [v[1] for v in mailbox_deltas.values()],
        [v[2] for v in mailbox_deltas.values()],
        list(user_deltas),
        [v[0] for v in user_deltas.values()],
        [v[1] for v in user_deltas.values()],
    )
    reserved = {r["id"]: (r["a"], r["b"]) for r in rows if r["is_mailbox"]}
    usage = {r["id"]: r["a"] for r in rows if not r["is_mailbox"]}
    return reserved, usage


_COLUMN_TYPES = {
    "mailbox_id": "bigint", "user_id": "bigint", "uid": "bigint", "modseq": "bigint", "delivery_id": "uuid",
    "maildir_path": "text", "size": "bigint", "flags": "text", "internal_date": "timestamptz",
    "message_id": "text", "subject": "text", "from_addr": "text", "to_addrs": "text", "cc_addrs": "text",
    "envelope_from": "text", "sent_date": "timestamptz", "in_reply_to": "text", "references_hdr": "text",
    "thread_id": "text", "has_attachments": "boolean", "body_text": "text",
}
_COLUMNS = list(MessageRow.__slots__)
assert set(_COLUMNS) == set(_COLUMN_TYPES), "every MessageRow field needs its SQL type"
# Flags are a text[] per row, which unnest cannot take as a 2-D array: they travel as one
# NUL-separated string per row and are split back in SQL.
_INSERT_MESSAGES = (
    f"INSERT INTO messages ({', '.join(_COLUMNS)}) SELECT "
    + ", ".join(
        "CASE WHEN r.flags = '' THEN '{}'::text[] ELSE string_to_array(r.flags, chr(1)) END" if c == "flags" else f"r.{c}"
        for c in _COLUMNS
    )
    + " FROM unnest("
    + ", ".join(f"${i + 1}::{_COLUMN_TYPES[c]}[]" for i, c in enumerate(_COLUMNS))
    + f") AS r({', '.join(_COLUMNS)})"
)


async def insert_messages(conn: asyncpg.Connection, rows: list[MessageRow]) -> None:
    """Insert message rows in one statement (arrays + unnest: one prepared plan, one round trip)."""
    columns: list[list] = [[] for _ in _COLUMNS]
    for row in rows:
        for position, name in enumerate(_COLUMNS):
            value = getattr(row, name)
            if name == "flags":
                value = "\x01".join(value)
            columns[position].append(value)
    await conn.execute(_INSERT_MESSAGES, *columns)
