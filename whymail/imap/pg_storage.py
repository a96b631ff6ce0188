"""`MailStorage` on PostgreSQL + Maildir: reads straight from the database and the files, writes
through the owning shard's `MailboxOps` (DESIGN.md, IMAP path).

In production `ops` and `waiter` are thin proxies that call the owning MailboxShard actor (routed by
user id); in tests both are one `MailboxOps` in the same process, the very code the shard runs.

The virtual Starred mailbox (special-use \\Flagged, RFC 6154) is listed and selectable but is always
empty and read-only for now: its contents would be every \\Flagged message of the user, and MODSEQs
of different mailboxes cannot be merged into one sequence without a per-user counter (TODO).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Protocol

import asyncpg

from whymail.auth.passwords import verify_password
from whymail.db import mailbox_queries as q
from whymail.directory.addresses import normalize_address
from whymail.imap.storage import (
    Account,
    AppendResult,
    Changes,
    CopyResult,
    MailboxInfo,
    MessageMeta,
    StorageError,
    StoreMode,
    StoreResult,
)
from whymail.maildir import find_message
from whymail.store.mailbox_ops import STARRED, canonical_name

# Checked when the user does not exist, so a wrong address costs as long as a wrong password.
_DUMMY_HASH = "$2b$12$K31dz4AyVRsC.9OFwazVWuC5dh3iDDjsaJIEyxoPowu4AIogZtA52"


class MailboxWriter(Protocol):
    """The shard-side writes (`whymail.store.mailbox_ops.MailboxOps`, or a proxy to the shard)."""

    async def store_flags(self, user_id: int, mailbox_id: int, uids: list[int], mode: StoreMode,
                          flags: frozenset[str], unchanged_since: int | None = None) -> StoreResult: ...
    async def expunge(self, user_id: int, mailbox_id: int, uids: list[int] | None = None) -> list[int]: ...
    async def copy(self, user_id: int, mailbox_id: int, uids: list[int], dest: str) -> CopyResult: ...
    async def move(self, user_id: int, mailbox_id: int, uids: list[int], dest: str) -> CopyResult: ...
    async def append(self, user_id: int, mailbox_name: str, data: bytes, flags: frozenset[str],
                     internal_date: datetime | None) -> AppendResult: ...
    async def create_mailbox(self, user_id: int, name: str, special_use: str | None = None) -> None: ...
    async def delete_mailbox(self, user_id: int, name: str) -> None: ...
    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None: ...
    async def set_subscribed(self, user_id: int, name: str, subscribed: bool) -> None: ...


class ChangeWaiter(Protocol):
    """`MailboxOps.wait_changes` (backed by the shard's `ChangeNotifier`), or a proxy to the shard."""

    async def wait_changes(self, user_id: int, mailbox_id: int, above: int, timeout: float) -> bool: ...


def _meta(row: q.MessageRow) -> MessageMeta:
    return MessageMeta(
        uid=row.uid, flags=frozenset(row.flags), modseq=row.modseq, internal_date=row.internal_date, size=row.size
    )


def _info(row: q.MailboxRow) -> MailboxInfo:
    return MailboxInfo(
        id=row.id, name=row.name, special_use=row.special_use, subscribed=row.subscribed,
        uidvalidity=row.uidvalidity, uidnext=row.uidnext, highestmodseq=row.highestmodseq,
        messages=row.message_count, unseen=row.unseen_count, size=row.total_size,
    )


def starred_id(account: Account) -> int:
    """Id of the account's virtual Starred mailbox: negative, so it never meets a real one."""
    return -account.user_id


def _starred(account: Account) -> MailboxInfo:
    return MailboxInfo(
        id=starred_id(account), name=STARRED, special_use="\\Flagged", subscribed=True, uidvalidity=1,
        uidnext=1, highestmodseq=1, messages=0, unseen=0, size=0,
    )


def _read_file(root: Path, relpath: str) -> bytes | None:
    path = root / relpath
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # A Maildir tool may have moved it to cur/ (with an info suffix).
        found = find_message(path.parent.parent, path.name)
        if found is None:
            return None
        try:
            return found.read_bytes()
        except FileNotFoundError:
            return None


class PgStorage:
    """The IMAP session's storage for one server process (any number of accounts)."""

    def __init__(
        self, pool: asyncpg.Pool, maildir_root: Path, ops: MailboxWriter, waiter: ChangeWaiter,
        *, executor: Executor | None = None,
    ) -> None:
        self._pool = pool
        self._root = Path(maildir_root)
        self._ops = ops
        self._waiter = waiter
        self._executor = executor

    def _is_starred(self, account: Account, mailbox_id: int) -> bool:
        if mailbox_id == starred_id(account):
            return True
        if mailbox_id <= 0:
            raise StorageError("NONEXISTENT", "No such mailbox")
        return False

    def _refuse_starred(self, account: Account, mailbox_id: int) -> None:
        if self._is_starred(account, mailbox_id):
            raise StorageError("CANNOT", f"{STARRED} is a virtual mailbox")

    @staticmethod
    def _refuse_starred_name(name: str) -> None:
        if name.lower() == STARRED.lower():
            raise StorageError("CANNOT", f"{STARRED} is a virtual mailbox")

    async def _owned(self, conn: asyncpg.Connection, account: Account, mailbox_id: int) -> q.MailboxRow:
        row = await q.mailbox_by_id(conn, account.user_id, mailbox_id)
        if row is None:
            raise StorageError("NONEXISTENT", "No such mailbox")
        return row

    # --- reads ----------------------------------------------------------------------------------

    async def list_mailboxes(self, account: Account) -> list[MailboxInfo]:
        async with self._pool.acquire() as conn:
            rows = await q.list_mailboxes(conn, account.user_id)
        return [*(_info(r) for r in rows), _starred(account)]

    async def get_mailbox(self, account: Account, name: str) -> MailboxInfo:
        try:
            canonical = canonical_name(name)
        except StorageError:
            raise StorageError("NONEXISTENT", "No such mailbox") from None
        if canonical.lower() == STARRED.lower():
            return _starred(account)
        async with self._pool.acquire() as conn:
            row = await q.mailbox_by_name(conn, account.user_id, canonical)
        if row is None:
            raise StorageError("NONEXISTENT", "No such mailbox")
        return _info(row)

    async def list_messages(self, account: Account, mailbox_id: int) -> list[MessageMeta]:
        if self._is_starred(account, mailbox_id):
            return []
        async with self._pool.acquire() as conn:
            await self._owned(conn, account, mailbox_id)
            rows = await q.list_messages(conn, account.user_id, mailbox_id)
        return [_meta(r) for r in rows]

    async def changes_since(self, account: Account, mailbox_id: int, modseq: int) -> Changes:
        if self._is_starred(account, mailbox_id):
            return Changes(highestmodseq=1, uidnext=1, added=(), updated=(), expunged=())
        async with self._pool.acquire() as conn:
            found = await q.changes_since(conn, account.user_id, mailbox_id, modseq)
        if found is None:
            raise StorageError("NONEXISTENT", "No such mailbox")
        # UIDs only grow, so a changed message above every unchanged one is (almost always) new; a
        # session compares with its own UIDNEXT to be exact (see Changes).
        added = tuple(_meta(r) for r in found.changed if r.uid > found.last_unchanged_uid)
        updated = tuple(_meta(r) for r in found.changed if r.uid <= found.last_unchanged_uid)
        return Changes(
            highestmodseq=found.mailbox.highestmodseq, uidnext=found.mailbox.uidnext,
            added=added, updated=updated, expunged=tuple(found.expunged),
        )

    async def wait_changes(self, account: Account, mailbox_id: int, modseq: int, timeout: float) -> bool:
        if self._is_starred(account, mailbox_id):
            await asyncio.sleep(max(0.0, timeout))
            return False
        async with self._pool.acquire() as conn:
            current = await q.mailbox_modseq(conn, account.user_id, mailbox_id)
        if current is None:
            raise StorageError("NONEXISTENT", "No such mailbox")
        if current > modseq:
            return True
        return await self._waiter.wait_changes(account.user_id, mailbox_id, modseq, timeout)

    async def read_message(self, account: Account, mailbox_id: int, uid: int) -> bytes:
        if self._is_starred(account, mailbox_id):
            raise StorageError("NONEXISTENT", "No such message")
        async with self._pool.acquire() as conn:
            relpath = await q.message_path(conn, account.user_id, mailbox_id, uid)
        if relpath is None:
            raise StorageError("NONEXISTENT", "No such message")
        data = await asyncio.get_running_loop().run_in_executor(self._executor, _read_file, self._root, relpath)
        if data is None:  # expunged between the row and the file
            raise StorageError("NONEXISTENT", "No such message")
        return data

    # --- writes (through the owning shard) ------------------------------------------------------

    async def store_flags(
        self, account: Account, mailbox_id: int, uids: list[int], mode: StoreMode, flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        self._refuse_starred(account, mailbox_id)
        return await self._ops.store_flags(account.user_id, mailbox_id, list(uids), mode, flags, unchanged_since)

    async def expunge(self, account: Account, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        self._refuse_starred(account, mailbox_id)
        return await self._ops.expunge(account.user_id, mailbox_id, None if uids is None else list(uids))

    async def copy(self, account: Account, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        self._refuse_starred(account, mailbox_id)
        self._refuse_starred_name(dest)
        return await self._ops.copy(account.user_id, mailbox_id, list(uids), dest)

    async def move(self, account: Account, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        self._refuse_starred(account, mailbox_id)
        self._refuse_starred_name(dest)
        return await self._ops.move(account.user_id, mailbox_id, list(uids), dest)

    async def append(
        self, account: Account, mailbox: str, data: bytes, flags: frozenset[str], internal_date: datetime | None
    ) -> AppendResult:
        self._refuse_starred_name(mailbox)
        return await self._ops.append(account.user_id, mailbox, data, flags, internal_date)

    async def create_mailbox(self, account: Account, name: str, special_use: str | None = None) -> None:
        await self._ops.create_mailbox(account.user_id, name, special_use)

    async def delete_mailbox(self, account: Account, name: str) -> None:
        await self._ops.delete_mailbox(account.user_id, name)

    async def rename_mailbox(self, account: Account, old: str, new: str) -> None:
        await self._ops.rename_mailbox(account.user_id, old, new)

    async def set_subscribed(self, account: Account, name: str, subscribed: bool) -> None:
        if name.lower() == STARRED.lower():
            return  # always subscribed
        await self._ops.set_subscribed(account.user_id, name, subscribed)


class PgAuthenticator:
    """LOGIN / AUTHENTICATE PLAIN: email + bcrypt (checked in a thread), active users of active domains."""

    def __init__(self, pool: asyncpg.Pool, *, executor: Executor | None = None) -> None:
        self._pool = pool
        self._executor = executor

    async def authenticate(self, username: str, password: str, *, remote_ip: str) -> Account | None:
        try:
            email = normalize_address(username)
        except ValueError:
            email = None
        login = None
        if email is not None:
            async with self._pool.acquire() as conn:
                login = await q.login_by_email(conn, email)
        hashed = login.password_hash if login is not None else _DUMMY_HASH
        ok = await asyncio.get_running_loop().run_in_executor(self._executor, verify_password, password, hashed)
        if not ok or login is None or not login.is_active:
            return None
        return Account(user_id=login.user_id, email=login.email)
