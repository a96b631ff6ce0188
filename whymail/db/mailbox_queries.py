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


# --- the virtual Starred mailbox (migration 003: kept in step by a trigger on messages) --------------


@dataclass(frozen=True, slots=True)
class StarredState:
    uidnext: int
    highestmodseq: int
    message_count: int
    unseen_count: int
    total_size: int


@dataclass(frozen=True, slots=True)
class StarredRow:
    """One entry of the view: its virtual UID, the real message behind it, and the view's MODSEQs."""

    vuid: int
    mailbox_id: int | None  # None once gone
    uid: int | None
    flags: tuple[str, ...]
    modseq: int
    created_modseq: int
    internal_date: datetime | None
    size: int
    gone: bool

    def meta_row(self) -> MessageRow:
        assert self.internal_date is not None
        return MessageRow(uid=self.vuid, flags=self.flags, modseq=self.modseq,
                          internal_date=self.internal_date, size=self.size)


_STARRED_SELECT = """SELECT s.vuid, m.mailbox_id, m.uid, coalesce(m.flags, '{}') AS flags, s.modseq,
                            s.created_modseq, m.internal_date, coalesce(m.size, 0) AS size, s.gone
                       FROM starred s LEFT JOIN messages m ON m.id = s.message_id AND NOT s.gone"""


def _starred_row(row: asyncpg.Record) -> StarredRow:
    return StarredRow(
        vuid=row["vuid"], mailbox_id=row["mailbox_id"], uid=row["uid"], flags=tuple(row["flags"]),
        modseq=row["modseq"], created_modseq=row["created_modseq"], internal_date=row["internal_date"],
        size=row["size"], gone=row["gone"] or row["mailbox_id"] is None,
    )


async def starred_state(conn: asyncpg.Connection, user_id: int) -> StarredState:
    """UIDNEXT, HIGHESTMODSEQ and counts of the user's Starred view."""
    row = await conn.fetchrow(
        """SELECT coalesce((SELECT uidnext FROM starred_state WHERE user_id = $1), 1) AS uidnext,
                  coalesce((SELECT highestmodseq FROM starred_state WHERE user_id = $1), 1) AS highestmodseq,
                  count(m.id) AS message_count,
                  count(m.id) FILTER (WHERE NOT '\\Seen' = ANY(m.flags)) AS unseen_count,
                  coalesce(sum(m.size), 0)::bigint AS total_size
             FROM starred s JOIN messages m ON m.id = s.message_id
            WHERE s.user_id = $1 AND NOT s.gone""",
        user_id,
    )
    return StarredState(**dict(row))


async def starred_modseq(conn: asyncpg.Connection, user_id: int) -> int:
    """HIGHESTMODSEQ of the user's Starred view."""
    found = await conn.fetchval("SELECT highestmodseq FROM starred_state WHERE user_id = $1", user_id)
    return found or 1


async def starred_messages(conn: asyncpg.Connection, user_id: int, vuids: list[int] | None = None) -> list[StarredRow]:
    """The messages in the view (only those of `vuids` when given, gone ones included then), by virtual UID."""
    if vuids is None:
        rows = await conn.fetch(f"{_STARRED_SELECT} WHERE s.user_id = $1 AND NOT s.gone ORDER BY s.vuid", user_id)
    else:
        rows = await conn.fetch(
            f"{_STARRED_SELECT} WHERE s.user_id = $1 AND s.vuid = ANY($2::bigint[]) ORDER BY s.vuid", user_id, vuids
        )
    return [_starred_row(r) for r in rows]


async def starred_changes(
    conn: asyncpg.Connection, user_id: int, modseq: int
) -> tuple[StarredState, list[StarredRow]]:
    """State and every entry changed above `modseq` (gone ones included), in one REPEATABLE READ snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        state = await starred_state(conn, user_id)
        if state.highestmodseq <= modseq:
            return state, []
        rows = await conn.fetch(
            f"{_STARRED_SELECT} WHERE s.user_id = $1 AND s.modseq > $2 ORDER BY s.vuid", user_id, modseq
        )
    return state, [_starred_row(r) for r in rows]


async def starred_path(conn: asyncpg.Connection, user_id: int, vuid: int) -> str | None:
    """The Maildir path of the message behind a virtual UID still in the view, or None."""
    return await conn.fetchval(
        """SELECT m.maildir_path FROM starred s JOIN messages m ON m.id = s.message_id
            WHERE s.user_id = $1 AND s.vuid = $2 AND NOT s.gone""",
        user_id, vuid,
    )
