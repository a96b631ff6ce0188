"""The mail store's SQL against the real PostgreSQL: UID reservation, counters, batched inserts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from whymail.auth.passwords import hash_password
from whymail.db.messages import NewMessage, delivered_already, store_messages
from whymail.directory import service


def _message(mailbox_id: int, user_id: int, position: int, flags: list[str], size: int = 100) -> NewMessage:
    return NewMessage(
        mailbox_id=mailbox_id, position=position, user_id=user_id, delivery_id=uuid.uuid4(),
        maildir_path=f"x/new/{uuid.uuid4().hex}", size=size, flags=flags, internal_date=datetime.now(UTC),
        message_id=None, subject=f"s{position}", from_addr="", to_addrs="", cc_addrs="", envelope_from="",
        sent_date=None, in_reply_to=None, references_hdr=None, thread_id=None, has_attachments=False,
        body_text="words here",
    )


async def _user(conn: asyncpg.Connection, domain: str) -> tuple[int, int, int]:
    await service.add_domain(conn, domain)
    user = await service.add_user(conn, f"u@{domain}", hash_password("pw-123456", rounds=4), quota_bytes=0)
    inbox = await conn.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user.id)
    junk = await conn.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'Junk'", user.id)
    return user.id, inbox, junk


async def test_store_messages_reserves_ascending_uids_and_counts(pg_dsn: str, unique: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        user_id, inbox, junk = await _user(conn, f"sql{unique}.test")
        batch = [
            _message(inbox, user_id, 0, []),
            _message(inbox, user_id, 1, ["\\Seen", "$label1"]),
            _message(junk, user_id, 0, []),
            _message(inbox, user_id, 2, []),
        ]
        stored = await store_messages(conn, batch)
        assert stored.reserved == {inbox: (1, 2), junk: (1, 2)}
        assert stored.usage == {user_id: 400}
        stored = await store_messages(conn, [_message(inbox, user_id, 0, [], size=50)])
        assert stored.reserved == {inbox: (4, 3)}, "the next batch continues after the reserved UIDs"
        assert stored.usage == {user_id: 450}
        rows = await conn.fetch("SELECT uid, modseq, flags FROM messages WHERE mailbox_id = $1 ORDER BY uid", inbox)
        assert [(r["uid"], r["modseq"], r["flags"]) for r in rows] == [
            (1, 2, []), (2, 2, ["\\Seen", "$label1"]), (3, 2, []), (4, 3, []),
        ]
        counts = await conn.fetchrow(
            "SELECT uidnext, message_count, unseen_count, total_size FROM mailboxes WHERE id = $1", inbox
        )
        assert tuple(counts) == (5, 4, 3, 350)
        found = await delivered_already(conn, [(inbox, batch[1].delivery_id), (inbox, uuid.uuid4())])
        assert found == {(inbox, batch[1].delivery_id): 2}
    finally:
        await conn.close()


async def test_a_failed_store_reserves_nothing_and_counts_nothing(pg_dsn: str, unique: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        user_id, inbox, _junk = await _user(conn, f"rb{unique}.test")
        first = _message(inbox, user_id, 0, [])
        await store_messages(conn, [first])
        duplicate = NewMessage(**{**{f: getattr(first, f) for f in NewMessage.__slots__}, "position": 0})
        with pytest.raises(asyncpg.UniqueViolationError):
            await store_messages(conn, [_message(inbox, user_id, 0, []), duplicate])
        counts = await conn.fetchrow("SELECT uidnext, message_count FROM mailboxes WHERE id = $1", inbox)
        assert tuple(counts) == (2, 1)
        assert await conn.fetchval("SELECT storage_used FROM users WHERE id = $1", user_id) == 100
        stored = await store_messages(conn, [_message(inbox, user_id, 0, [])])
        assert stored.reserved[inbox][0] == 2
    finally:
        await conn.close()


async def test_the_quota_is_a_hard_limit_in_sql(pg_dsn: str, unique: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        user_id, inbox, _junk = await _user(conn, f"q{unique}.test")
        await conn.execute("UPDATE users SET quota_bytes = 1500 WHERE id = $1", user_id)
        await store_messages(conn, [_message(inbox, user_id, 0, [], size=1000)])
        with pytest.raises(asyncpg.NotNullViolationError):
            await store_messages(conn, [_message(inbox, user_id, 0, [], size=1000)])
        row = await conn.fetchrow("SELECT storage_used, message_count FROM users WHERE id = $1", user_id)
        assert tuple(row) == (1000, 1)
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", user_id) == 1
        await store_messages(conn, [_message(inbox, user_id, 0, [], size=500)])  # exactly at the quota
    finally:
        await conn.close()
