"""The mail store's SQL against the real PostgreSQL: UID reservation, counters, batched inserts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from whymail.auth.passwords import hash_password
from whymail.db.messages import MessageRow, apply_delivery, delivered_already, insert_messages
from whymail.directory import service


def _row(mailbox_id: int, user_id: int, uid: int, modseq: int, flags: list[str]) -> MessageRow:
    return MessageRow(
        mailbox_id=mailbox_id, user_id=user_id, uid=uid, modseq=modseq, delivery_id=uuid.uuid4(),
        maildir_path=f"x/new/{uid}", size=100, flags=flags, internal_date=datetime.now(UTC), message_id=None,
        subject=f"s{uid}", from_addr="", to_addrs="", cc_addrs="", envelope_from="", sent_date=None,
        in_reply_to=None, references_hdr=None, thread_id=None, has_attachments=False, body_text="words here",
    )


async def test_apply_delivery_reserves_ascending_uids_and_counts(pg_dsn: str, unique: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await service.add_domain(conn, f"sql{unique}.test")
        user = await service.add_user(conn, f"u@sql{unique}.test", hash_password("pw-123456", rounds=4), quota_bytes=0)
        inbox = await conn.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user.id)
        async with conn.transaction():
            reserved, usage = await apply_delivery(conn, {inbox: (3, 2, 300)}, {user.id: (3, 300)})
            assert reserved == {inbox: (1, 2)}
            assert usage == {user.id: 300}
            rows = [_row(inbox, user.id, 1 + i, 2, flags) for i, flags in enumerate([[], ["\\Seen", "$label1"], []])]
            await insert_messages(conn, rows)
        reserved, usage = await apply_delivery(conn, {inbox: (1, 1, 50)}, {user.id: (1, 50)})
        assert reserved == {inbox: (4, 3)}, "the next batch continues after the reserved UIDs"
        assert usage == {user.id: 350}
        stored = await conn.fetch("SELECT uid, flags FROM messages WHERE mailbox_id = $1 ORDER BY uid", inbox)
        assert [(r["uid"], r["flags"]) for r in stored] == [(1, []), (2, ["\\Seen", "$label1"]), (3, [])]
        counts = await conn.fetchrow("SELECT uidnext, message_count, unseen_count, total_size FROM mailboxes WHERE id = $1", inbox)
        assert tuple(counts) == (5, 4, 3, 350)
        found = await delivered_already(conn, [(inbox, rows[1].delivery_id), (inbox, uuid.uuid4())])
        assert found == {(inbox, rows[1].delivery_id): 2}
    finally:
        await conn.close()


async def test_a_rolled_back_delivery_gives_its_uids_back(pg_dsn: str, unique: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await service.add_domain(conn, f"rb{unique}.test")
        user = await service.add_user(conn, f"u@rb{unique}.test", hash_password("pw-123456", rounds=4), quota_bytes=0)
        inbox = await conn.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'", user.id)
        try:
            async with conn.transaction():
                await apply_delivery(conn, {inbox: (2, 2, 10)}, {user.id: (2, 10)})
                raise RuntimeError("commit fails")
        except RuntimeError:
            pass
        reserved, _ = await apply_delivery(conn, {inbox: (1, 1, 5)}, {user.id: (1, 5)})
        assert reserved[inbox][0] == 1
    finally:
        await conn.close()
