"""`MailStorage` on PostgreSQL + Maildir: reads straight from the database and the files, writes
through the owning shard's `MailboxOps` (DESIGN.md, IMAP path).

In production `ops` and `waiter` are thin proxies that call the owning MailboxShard actor (routed by
user id); in tests both are one `MailboxOps` in the same process, the very code the shard runs.

The virtual Starred mailbox (special-use \\Flagged, RFC 6154) shows every \\Flagged message of the
user under its own UIDs and MODSEQs, kept by a trigger on `messages` (migration 003): UIDVALIDITY is
fixed (virtual UIDs are never reused), a message that leaves the view (unflagged, expunged, moved) is
reported expunged. Flag changes made through it reach the real message; other writes are refused.
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


STARRED_UIDVALIDITY = 1
_STARRED_POLL = 0.25  # seconds between checks of an idling Starred session


def _starred(account: Account, state: q.StarredState) -> MailboxInfo:
    return MailboxInfo(
        id=starred_id(account), name=STARRED, special_use="\\Flagged", subscribed=True,
        uidvalidity=STARRED_UIDVALIDITY, uidnext=state.uidnext, highestmodseq=state.highestmodseq,
        messages=state.message_count, unseen=state.unseen_count, size=state.total_size,
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
            state = await q.starred_state(conn, account.user_id)
        return [*(_info(r) for r in rows), _starred(account, state)]

    async def get_mailbox(self, account: Account, name: str) -> MailboxInfo:
        try:
            canonical = canonical_name(name)
        except StorageError:
            raise StorageError("NONEXISTENT", "No such mailbox") from None
        if canonical.lower() == STARRED.lower():
            async with self._pool.acquire() as conn:
                return _starred(account, await q.starred_state(conn, account.user_id))
        async with self._pool.acquire() as conn:
            row = await q.mailbox_by_name(conn, account.user_id, canonical)
        if row is None:
            raise StorageError("NONEXISTENT", "No such mailbox")
        return _info(row)

    async def list_messages(self, account: Account, mailbox_id: int) -> list[MessageMeta]:
        if self._is_starred(account, mailbox_id):
            async with self._pool.acquire() as conn:
                rows = await q.starred_messages(conn, account.user_id)
            return [_meta(r.meta_row()) for r in rows]
        async with self._pool.acquire() as conn:
            await self._owned(conn, account, mailbox_id)
            rows = await q.list_messages(conn, account.user_id, mailbox_id)
        return [_meta(r) for r in rows]

    async def changes_since(self, account: Account, mailbox_id: int, modseq: int) -> Changes:
        if self._is_starred(account, mailbox_id):
            async with self._pool.acquire() as conn:
                state, rows = await q.starred_changes(conn, account.user_id, modseq)
            present = [r for r in rows if not r.gone]
            return Changes(
                highestmodseq=state.highestmodseq, uidnext=state.uidnext,
                added=tuple(_meta(r.meta_row()) for r in present if r.created_modseq > modseq),
                updated=tuple(_meta(r.meta_row()) for r in present if r.created_modseq <= modseq),
                # entries that came and went after `modseq` were never seen at it
                expunged=tuple(r.vuid for r in rows if r.gone and r.created_modseq <= modseq),
            )
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
            # Any mailbox of the user can change the view, and the notifier is per mailbox: poll.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(0.0, timeout)
            while True:
                async with self._pool.acquire() as conn:
                    if await q.starred_modseq(conn, account.user_id) > modseq:
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                await asyncio.sleep(min(_STARRED_POLL, remaining))
        async with self._pool.acquire() as conn:
            current = await q.mailbox_modseq(conn, account.user_id, mailbox_id)
        if current is None:
            raise StorageError("NONEXISTENT", "No such mailbox")
        if current > modseq:
            return True
        return await self._waiter.wait_changes(account.user_id, mailbox_id, modseq, timeout)

    async def read_message(self, account: Account, mailbox_id: int, uid: int) -> bytes:
        async with self._pool.acquire() as conn:
            if self._is_starred(account, mailbox_id):
                relpath = await q.starred_path(conn, account.user_id, uid)
            else:
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
        if self._is_starred(account, mailbox_id):
            return await self._store_starred(account, uids, mode, flags, unchanged_since)
        return await self._ops.store_flags(account.user_id, mailbox_id, list(uids), mode, flags, unchanged_since)

    async def _store_starred(
        self, account: Account, uids: list[int], mode: StoreMode, flags: frozenset[str], unchanged_since: int | None,
    ) -> StoreResult:
        """STORE through Starred: each virtual UID maps to its real message, changed by its own mailbox."""
        async with self._pool.acquire() as conn:
            rows = await q.starred_messages(conn, account.user_id, sorted(set(uids)))
        known = {r.vuid: r for r in rows}
        modified: list[int] = []
        by_mailbox: dict[int, dict[int, int]] = {}  # mailbox id -> real uid -> virtual uid
        for row in rows:
            if row.gone or row.mailbox_id is None or row.uid is None:
                continue
            # UNCHANGEDSINCE compares with the view's MODSEQ (the one the client saw); checked here.
            if unchanged_since is not None and row.modseq > unchanged_since:
                modified.append(row.vuid)
                continue
            by_mailbox.setdefault(row.mailbox_id, {})[row.uid] = row.vuid
        changed_vuids: dict[int, frozenset[str]] = {}
        for mailbox_id, mapping in by_mailbox.items():
            try:
                result = await self._ops.store_flags(account.user_id, mailbox_id, sorted(mapping), mode, flags, None)
            except StorageError as err:
                if err.code == "NONEXISTENT":  # the mailbox went away meanwhile
                    continue
                raise
            for meta in result.changed:
                if meta.uid in mapping:
                    changed_vuids[mapping[meta.uid]] = meta.flags
        changed: list[MessageMeta] = []
        if changed_vuids:
            async with self._pool.acquire() as conn:
                after = {r.vuid: r for r in await q.starred_messages(conn, account.user_id, sorted(changed_vuids))}
            for vuid, new_flags in sorted(changed_vuids.items()):
                row = after.get(vuid)
                if row is None:
                    continue
                if row.gone:  # unflagged through Starred: it left the view, report its last state
                    before = known[vuid]
                    assert before.internal_date is not None
                    changed.append(MessageMeta(uid=vuid, flags=new_flags, modseq=row.modseq,
                                               internal_date=before.internal_date, size=before.size))
                else:
                    changed.append(_meta(row.meta_row()))
        return StoreResult(tuple(changed), tuple(sorted(modified)))

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
