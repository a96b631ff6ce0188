"""Read SQL of the IMAP path: mailboxes of a user, messages of a mailbox, changes since a MODSEQ.

Every query is scoped by `user_id` as well as by id, so a mailbox id of another user reads as absent.
Writes live in `whymail.store.mailbox_ops` (run by the owning shard).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class MailboxRow:
    id: int
    name: str
    special_use: str | None
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    message_count: int
    unseen_count: int
    total_size: int


@dataclass(frozen=True, slots=True)
class MessageRow:
    uid: int
    flags: tuple[str, ...]
    modseq: int
    internal_date: datetime
    size: int


@dataclass(frozen=True, slots=True)
class ChangeRows:
    """A consistent snapshot of what changed after a MODSEQ."""

    mailbox: MailboxRow
    changed: list[MessageRow]  # modseq above `since`, by UID
    last_unchanged_uid: int  # highest UID whose modseq is at most `since` (0 when none)
    expunged: list[int]  # UIDs expunged above `since`, ascending


_MAILBOX_COLUMNS = """id, name, special_use, subscribed, uidvalidity, uidnext, highestmodseq,
                      message_count, unseen_count, total_size"""
_MESSAGE_COLUMNS = "uid, flags, modseq, internal_date, size"


def _mailbox(row: asyncpg.Record) -> MailboxRow:
    return MailboxRow(**dict(row))


def _message(row: asyncpg.Record) -> MessageRow:
    return MessageRow(
        uid=row["uid"], flags=tuple(row["flags"]), modseq=row["modseq"],
        internal_date=row["internal_date"], size=row["size"],
    )


async def list_mailboxes(conn: asyncpg.Connection, user_id: int) -> list[MailboxRow]:
    """Every mailbox of the user: INBOX first, then by name."""
    rows = await conn.fetch(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = $1 ORDER BY name <> 'INBOX', name", user_id
    )
    return [_mailbox(r) for r in rows]


async def mailbox_by_name(conn: asyncpg.Connection, user_id: int, name: str) -> MailboxRow | None:
    """The user's mailbox called `name` (exact, already canonical), or None."""
    row = await conn.fetchrow(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = $1 AND name = $2", user_id, name
    )
    return _mailbox(row) if row else None


async def mailbox_by_id(conn: asyncpg.Connection, user_id: int, mailbox_id: int) -> MailboxRow | None:
    """The mailbox `mailbox_id` if the user owns it, else None."""
    row = await conn.fetchrow(
        f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1 AND user_id = $2", mailbox_id, user_id
    )
    return _mailbox(row) if row else None


async def list_messages(conn: asyncpg.Connection, user_id: int, mailbox_id: int) -> list[MessageRow]:
    """Every message of the mailbox (uid, flags, modseq, internal date, size), by ascending UID."""
    rows = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = $1 AND user_id = $2 ORDER BY uid",
        mailbox_id, user_id,
    )
    return [_message(r) for r in rows]


async def changes_since(conn: asyncpg.Connection, user_id: int, mailbox_id: int, modseq: int) -> ChangeRows | None:
    """Messages and expunges above `modseq`, read in one REPEATABLE READ snapshot; None if not the user's."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1 AND user_id = $2", mailbox_id, user_id
        )
        if row is None:
            return None
        mailbox = _mailbox(row)
        if mailbox.highestmodseq <= modseq:
            return ChangeRows(mailbox=mailbox, changed=[], last_unchanged_uid=0, expunged=[])
        changed = await conn.fetch(
            f"""SELECT {_MESSAGE_COLUMNS} FROM messages
                 WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid""",
            mailbox_id, modseq,
        )
        last_unchanged = await conn.fetchval(
            "SELECT coalesce(max(uid), 0) FROM messages WHERE mailbox_id = $1 AND modseq <= $2", mailbox_id, modseq
        )
        expunged = await conn.fetch(
            "SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid", mailbox_id, modseq
        )
    return ChangeRows(
        mailbox=mailbox, changed=[_message(r) for r in changed], last_unchanged_uid=last_unchanged,
        expunged=[r["uid"] for r in expunged],
    )


async def mailbox_modseq(conn: asyncpg.Connection, user_id: int, mailbox_id: int) -> int | None:
    """HIGHESTMODSEQ of the user's mailbox, or None."""
    return await conn.fetchval(
        "SELECT highestmodseq FROM mailboxes WHERE id = $1 AND user_id = $2", mailbox_id, user_id
    )


async def message_path(conn: asyncpg.Connection, user_id: int, mailbox_id: int, uid: int) -> str | None:
    """The Maildir path (relative to the root) of one message, or None when there is no such message."""
    return await conn.fetchval(
        "SELECT maildir_path FROM messages WHERE mailbox_id = $1 AND uid = $2 AND user_id = $3",
        mailbox_id, uid, user_id,
    )


@dataclass(frozen=True, slots=True)
class Login:
    user_id: int
    email: str
    password_hash: str
    is_active: bool


async def login_by_email(conn: asyncpg.Connection, email: str) -> Login | None:
    """The credentials row of the user (and whether user and domain are active), or None."""
    row = await conn.fetchrow(
        """SELECT u.id, u.email, u.password_hash, u.is_active AND d.is_active AS active
             FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.email = $1""",
        email,
    )
    if row is None:
        return None
    return Login(user_id=row["id"], email=row["email"], password_hash=row["password_hash"], is_active=row["active"])
