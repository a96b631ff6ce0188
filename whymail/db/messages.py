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
class NewMessage:
    """One message to insert; its UID is the mailbox's first reserved UID + `position`."""

    mailbox_id: int
    position: int  # 0, 1, 2, ... among this batch's messages for the same mailbox
    user_id: int
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


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What `store_messages` assigned: per mailbox (first UID, MODSEQ); per user the bytes stored."""

    reserved: dict[int, tuple[int, int]]
    usage: dict[int, int]


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


_COLUMN_TYPES = {
    "mailbox_id": "bigint", "position": "bigint", "user_id": "bigint", "delivery_id": "uuid",
    "maildir_path": "text", "size": "bigint", "flags": "text", "internal_date": "timestamptz",
    "message_id": "text", "subject": "text", "from_addr": "text", "to_addrs": "text", "cc_addrs": "text",
    "envelope_from": "text", "sent_date": "timestamptz", "in_reply_to": "text", "references_hdr": "text",
    "thread_id": "text", "has_attachments": "boolean", "body_text": "text",
}
_FIELDS = list(NewMessage.__slots__)
assert set(_FIELDS) == set(_COLUMN_TYPES), "every NewMessage field needs its SQL type"
_INSERTED = [f for f in _FIELDS if f not in ("mailbox_id", "position", "flags")]
_DELTA_PARAMS = 7


def _store_sql() -> str:
    params = ", ".join(f"${_DELTA_PARAMS + i + 1}::{_COLUMN_TYPES[f]}[]" for i, f in enumerate(_FIELDS))
    return f"""
WITH mb AS (
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
         WHERE u.id = d.id AND (u.quota_bytes = 0 OR u.storage_used + d.bytes <= u.quota_bytes)
     RETURNING u.id, u.storage_used),
     ins AS (
        INSERT INTO messages (mailbox_id, uid, modseq, flags, {", ".join(_INSERTED)})
        SELECT r.mailbox_id, CASE WHEN us.id IS NOT NULL THEN mb.first_uid + r.position END, mb.modseq,
               CASE WHEN r.flags = '' THEN '{{}}'::text[] ELSE string_to_array(r.flags, chr(1)) END,
               {", ".join(f"r.{f}" for f in _INSERTED)}
          FROM unnest({params}) AS r({", ".join(_FIELDS)})
          -- A vanished mailbox, or a user the batch would take over quota, leaves uid NULL: the
          -- NOT NULL violation aborts the whole statement, so nothing is stored half.
          LEFT JOIN mb ON mb.id = r.mailbox_id
          LEFT JOIN us ON us.id = r.user_id
     RETURNING 1)
SELECT TRUE AS is_mailbox, id, first_uid AS a, modseq AS b FROM mb
UNION ALL
SELECT FALSE, id, storage_used, 0 FROM us
UNION ALL
SELECT NULL, count(*), 0, 0 FROM ins"""  # reading `ins` keeps the planner honest; it always runs


_STORE_MESSAGES = _store_sql()


async def store_messages(conn: asyncpg.Connection, messages: list[NewMessage]) -> StoredBatch:
    """Reserve UIDs, insert the rows and count them, in ONE statement (one round trip, atomic).

    Raises asyncpg.NotNullViolationError, with nothing stored, when a mailbox no longer exists or
    a user would go over quota (the hard limit, whatever the callers' caches believed).

    Every mailbox of the batch gets its UIDs reserved and HIGHESTMODSEQ bumped once; row locks
    serialise concurrent writers, and a failed statement reserves nothing, so UIDs stay strictly
    ascending and are never reused (RFC 3501 §2.3.1.1). Flags travel as one \\x01-separated string
    per row because unnest cannot take a 2-D text array.
    """
    mailbox_deltas: dict[int, list[int]] = {}
    user_deltas: dict[int, list[int]] = {}
    columns: list[list] = [[] for _ in _FIELDS]
    for message in messages:
        mailbox = mailbox_deltas.setdefault(message.mailbox_id, [0, 0, 0])
        mailbox[0] += 1
        mailbox[1] += 0 if "\\Seen" in message.flags else 1
        mailbox[2] += message.size
        user = user_deltas.setdefault(message.user_id, [0, 0])
        user[0] += 1
        user[1] += message.size
        for position, name in enumerate(_FIELDS):
            value = getattr(message, name)
            columns[position].append("\x01".join(value) if name == "flags" else value)
    rows = await conn.fetch(
        _STORE_MESSAGES,
        list(mailbox_deltas),
        [v[0] for v in mailbox_deltas.values()],
        [v[1] for v in mailbox_deltas.values()],
        [v[2] for v in mailbox_deltas.values()],
        list(user_deltas),
        [v[0] for v in user_deltas.values()],
        [v[1] for v in user_deltas.values()],
        *columns,
    )
    return StoredBatch(
        reserved={r["id"]: (r["a"], r["b"]) for r in rows if r["is_mailbox"] is True},
        usage={r["id"]: r["a"] for r in rows if r["is_mailbox"] is False},
    )
