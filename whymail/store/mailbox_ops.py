"""The IMAP write path the owning MailboxShard runs: flags, expunge, copy/move, append, mailbox admin.

Each operation is ONE PostgreSQL transaction scoped by `user_id` (a mailbox id of another user reads
as NONEXISTENT). Every change bumps the mailbox's HIGHESTMODSEQ once and stamps that MODSEQ on every
changed row (RFC 7162); expunges are logged in `expunged` for QRESYNC. After the commit the
`ChangeNotifier` wakes IDLE waiters. Files follow the delivery rule: new files (APPEND, the hard links
of COPY/MOVE/RENAME) are durable before the commit and removed again if it fails; files that lose
their row (EXPUNGE, DELETE, the old links of RENAME) are removed only after the commit.

Lock order is mailbox rows (by id) then the user row, the same as `store_messages` uses for deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from whymail.db import messages as sql
from whymail.directory.service import allocate_uidvalidities
from whymail.imap.storage import (
    SYSTEM_FLAGS,
    AppendResult,
    CopyResult,
    MessageMeta,
    StorageError,
    StoreMode,
    StoreResult,
)
from whymail.maildir import (
    INBOX,
    MaildirFile,
    MaildirNameError,
    ensure_folder,
    find_message,
    folder_dir,
    is_inbox,
    mailbox_to_dirname,
    remove_files,
    unique_name,
    write_files_async,
)
from whymail.maildir.writer import FOLDER_MARKER, SUBDIRS
from whymail.mime.summary import MessageSummary, summarize, thread_id
from whymail.notify import events as live
from whymail.store.notifier import ChangeNotifier

log = logging.getLogger(__name__)

STARRED = "Starred"  # name of the virtual \Flagged mailbox; no real mailbox may take it
SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"})
_SYSTEM_BY_LOWER = {f.lower(): f for f in SYSTEM_FLAGS}
_MAX_FIELD = 2000
_MAX_INDEXED_BODY = 32 * 1024
_INLINE_PARSE_LIMIT = 256 * 1024
_COPIED_COLUMNS = """uid, size, flags, internal_date, maildir_path, message_id, subject, from_addr, to_addrs,
    cc_addrs, envelope_from, sent_date, in_reply_to, references_hdr, thread_id, has_attachments, body_text"""


def canonical_name(name: str) -> str:
    """The stored form of an IMAP mailbox name: INBOX upper-cased (RFC 3501 §5.1), one trailing '/'
    dropped (RFC 3501 §6.3.3); StorageError CANNOT when it cannot map onto Maildir++."""
    if name.endswith("/") and len(name) > 1:
        name = name[:-1]
    levels = name.split("/")
    if is_inbox(levels[0]):
        levels[0] = INBOX
    canonical = "/".join(levels)
    try:
        mailbox_to_dirname(canonical)
    except MaildirNameError as exc:
        raise StorageError("CANNOT", f"Invalid mailbox name: {exc}") from None
    return canonical


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical case; \\Recent dropped (the server alone sets it)."""
    out = set()
    for flag in flags:
        if flag.startswith("\\"):
            canonical = _SYSTEM_BY_LOWER.get(flag.lower())
            if canonical is None:
                continue  # \Recent and unknown system flags cannot be stored (RFC 3501 §2.3.2)
            out.add(canonical)
        else:
            out.add(flag)
    return frozenset(out)


def _apply(mode: StoreMode, old: frozenset[str], flags: frozenset[str]) -> frozenset[str]:
    if mode is StoreMode.ADD:
        return old | flags
    if mode is StoreMode.REMOVE:
        return old - flags
    return flags


def _unseen(flags: Iterable[str]) -> int:
    return 0 if "\\Seen" in flags else 1


def _flag_string(flags: Iterable[str]) -> str:
    return "\x01".join(sorted(flags))


def _parents(name: str) -> list[str]:
    levels = name.split("/")
    return ["/".join(levels[:i]) for i in range(1, len(levels))]


@dataclass(frozen=True, slots=True)
class _User:
    id: int
    domain: str
    local_part: str
    quota_bytes: int
    storage_used: int


@dataclass(slots=True)
class _Effects:
    """What to do after a commit: whom to notify, which files lost their row."""

    notify: dict[int, int] = field(default_factory=dict)
    obsolete_files: list[Path] = field(default_factory=list)
    new_files: list[Path] = field(default_factory=list)  # removed again if the commit fails
    forget: list[int] = field(default_factory=list)
    user_changed: int | None = None  # the user whose mailboxes or storage use changed
    events: list[live.LiveEvent] = field(default_factory=list)  # published after the commit


class MailboxOps:
    """The single writer's IMAP operations for the users of one shard."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        maildir_root: Path,
        hostname: str,
        *,
        fsync: bool,
        executor: Executor,
        notifier: ChangeNotifier,
        on_user_changed: Callable[[int], None] | None = None,
        events: Callable[[list[live.LiveEvent]], None] | None = None,
    ) -> None:
        """`on_user_changed(user_id)` runs after a commit that changed a user's mailboxes or storage use
        (the shard passes `MailStore.forget_user`, so the delivery caches reload); `events(batch)`
        receives the live events of each commit (it must not block)."""
        self._events = events
        self._on_user_changed = on_user_changed
        self._pool = pool
        self._root = Path(maildir_root)
        self._hostname = hostname
        self._fsync = fsync
        self._executor = executor
        self._notifier = notifier

    # --- plumbing -------------------------------------------------------------------------------

    async def _in_thread(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _finish(self, effects: _Effects) -> None:
        if effects.user_changed is not None and self._on_user_changed is not None:
            self._on_user_changed(effects.user_changed)
        for mailbox_id, modseq in effects.notify.items():
            self._notifier.notify(mailbox_id, modseq)
        for mailbox_id in effects.forget:
            self._notifier.forget(mailbox_id)
        if effects.events and self._events is not None:
            self._events(effects.events)
        if effects.obsolete_files:
            await self._in_thread(remove_files, effects.obsolete_files)

    async def _run(self, body, *, user_changed: int | None = None) -> object:
        """Run `body(conn, effects)` in one transaction; undo new files on failure, apply effects after."""
        effects = _Effects(user_changed=user_changed)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                result = await body(conn, effects)
        except BaseException:
            if effects.new_files:
                await asyncio.shield(self._in_thread(remove_files, effects.new_files))
            raise
        await self._finish(effects)
        return result

    @staticmethod
    async def _lock_mailboxes(conn: asyncpg.Connection, user_id: int, ids: list[int]) -> dict[int, asyncpg.Record]:
        rows = await conn.fetch(
            """SELECT id, name, uidvalidity, uidnext, highestmodseq FROM mailboxes
                WHERE id = ANY($1::bigint[]) AND user_id = $2 ORDER BY id FOR UPDATE""",
            ids, user_id,
        )
        return {r["id"]: r for r in rows}

    async def _lock_mailbox(self, conn: asyncpg.Connection, user_id: int, mailbox_id: int) -> asyncpg.Record:
        found = await self._lock_mailboxes(conn, user_id, [mailbox_id])
        if mailbox_id not in found:
            raise StorageError("NONEXISTENT", "No such mailbox")
        return found[mailbox_id]

    @staticmethod
    async def _mailbox_id(conn: asyncpg.Connection, user_id: int, name: str) -> int | None:
        return await conn.fetchval("SELECT id FROM mailboxes WHERE user_id = $1 AND name = $2", user_id, name)

    @staticmethod
    async def _user(conn: asyncpg.Connection, user_id: int, *, lock: bool) -> _User:
        row = await conn.fetchrow(
            f"""SELECT u.id, d.name AS domain, u.local_part, u.quota_bytes, u.storage_used
                  FROM users u JOIN domains d ON d.id = u.domain_id
                 WHERE u.id = $1 {"FOR UPDATE OF u" if lock else ""}""",
            user_id,
        )
        if row is None:
            raise StorageError("NONEXISTENT", "No such user")
        return _User(**dict(row))

    def _folder(self, user: _User, mailbox: str) -> Path:
        try:
            return folder_dir(self._root, user.domain, user.local_part, mailbox)
        except MaildirNameError as exc:
            raise StorageError("CANNOT", f"Mailbox cannot be stored: {exc}") from None

    def _relpath(self, path: Path) -> str:
        return str(path.relative_to(self._root))

    def _source_path(self, relpath: str) -> Path:
        return self._root / relpath

    # --- flags ----------------------------------------------------------------------------------

    async def store_flags(
        self,
        user_id: int,
        mailbox_id: int,
        uids: list[int],
        mode: StoreMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """Change flags of `uids`; changed rows get the mailbox's next MODSEQ (RFC 7162 §3.1.3)."""
        wanted = normalize_flags(flags)

        async def body(conn: asyncpg.Connection, effects: _Effects) -> StoreResult:
            mailbox = await self._lock_mailbox(conn, user_id, mailbox_id)
            rows = await conn.fetch(
                """SELECT uid, flags, modseq, internal_date, size FROM messages
                    WHERE mailbox_id = $1 AND uid = ANY($2::bigint[]) ORDER BY uid""",
                mailbox_id, list(uids),
            )
            modified: list[int] = []
            updates: list[tuple[asyncpg.Record, frozenset[str]]] = []
            for row in rows:
                if unchanged_since is not None and row["modseq"] > unchanged_since:
                    modified.append(row["uid"])  # RFC 7162 §3.1.3: refused, reported in MODIFIED
                    continue
                old = frozenset(row["flags"])
                new = _apply(mode, old, wanted)
                if new != old:
                    updates.append((row, new))
            if not updates:
                return StoreResult(changed=(), modified=tuple(modified))
            modseq = mailbox["highestmodseq"] + 1
            unseen_delta = sum(_unseen(new) - _unseen(row["flags"]) for row, new in updates)
            await conn.execute(
                "UPDATE mailboxes SET highestmodseq = $2, unseen_count = unseen_count + $3 WHERE id = $1",
                mailbox_id, modseq, unseen_delta,
            )
            await conn.execute(
                """UPDATE messages AS m
                      SET flags = CASE WHEN d.f = '' THEN '{}'::text[] ELSE string_to_array(d.f, chr(1)) END,
                          modseq = $2
                     FROM unnest($3::bigint[], $4::text[]) AS d(uid, f)
                    WHERE m.mailbox_id = $1 AND m.uid = d.uid""",
                mailbox_id, modseq, [row["uid"] for row, _ in updates], [_flag_string(new) for _, new in updates],
            )
            effects.notify[mailbox_id] = modseq
            effects.events.append(live.flags_changed(user_id, mailbox_id, [(row["uid"], new) for row, new in updates]))
            changed = tuple(
                MessageMeta(uid=row["uid"], flags=new, modseq=modseq, internal_date=row["internal_date"],
                            size=row["size"])
                for row, new in updates
            )
            return StoreResult(changed=changed, modified=tuple(modified))

        return await self._run(body)

    async def wait_changes(self, user_id: int, mailbox_id: int, above: int, timeout: float) -> bool:
        """IDLE long-poll: True once the mailbox's HIGHESTMODSEQ passes `above` (the caller checked
        ownership and the current value in PostgreSQL first; `user_id` routes the call to the shard)."""
        return await self._notifier.wait(mailbox_id, above, timeout)

    # --- expunge --------------------------------------------------------------------------------

    async def _delete_rows(
        self, conn: asyncpg.Connection, user_id: int, mailbox_id: int, uids: list[int] | None, *,
        only_deleted: bool, effects: _Effects,
    ) -> list[int]:
        """Delete rows, log them as expunged under one new MODSEQ, fix counters; returns the UIDs."""
        rows = await conn.fetch(
            """DELETE FROM messages
                WHERE mailbox_id = $1 AND ($2::bigint[] IS NULL OR uid = ANY($2::bigint[]))
                  AND (NOT $3 OR '\\Deleted' = ANY(flags))
            RETURNING uid, size, flags, maildir_path""",
            mailbox_id, uids, only_deleted,
        )
        if not rows:
            return []
        removed = sorted(r["uid"] for r in rows)
        size = sum(r["size"] for r in rows)
        unseen = sum(_unseen(r["flags"]) for r in rows)
        modseq = await conn.fetchval(
            """UPDATE mailboxes SET highestmodseq = highestmodseq + 1, message_count = message_count - $2,
                      unseen_count = unseen_count - $3, total_size = total_size - $4
                WHERE id = $1 RETURNING highestmodseq""",
            mailbox_id, len(rows), unseen, size,
        )
        await conn.execute(
            """INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, u, $2 FROM unnest($3::bigint[]) AS u
               ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq, expunged_at = now()""",
            mailbox_id, modseq, removed,
        )
        await conn.execute(
            "UPDATE users SET storage_used = storage_used - $2, message_count = message_count - $3 WHERE id = $1",
            user_id, size, len(rows),
        )
        effects.notify[mailbox_id] = modseq
        effects.obsolete_files.extend(self._source_path(r["maildir_path"]) for r in rows)
        return removed

    async def _keep_referenced(self, conn: asyncpg.Connection, user_id: int, effects: _Effects) -> None:
        """Never unlink a file another row still names (defence in depth: paths are unique per row)."""
        if not effects.obsolete_files:
            return
        paths = [self._relpath(p) for p in effects.obsolete_files]
        rows = await conn.fetch(
            "SELECT maildir_path FROM messages WHERE user_id = $1 AND maildir_path = ANY($2::text[])", user_id, paths
        )
        kept = {r["maildir_path"] for r in rows}
        effects.obsolete_files = [p for p, rel in zip(effects.obsolete_files, paths, strict=True) if rel not in kept]

    async def expunge(self, user_id: int, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        """Remove the \\Deleted messages (only those in `uids` for UID EXPUNGE); returns their UIDs."""

        async def body(conn: asyncpg.Connection, effects: _Effects) -> list[int]:
            await self._lock_mailbox(conn, user_id, mailbox_id)
            removed = await self._delete_rows(
                conn, user_id, mailbox_id, None if uids is None else list(uids), only_deleted=True, effects=effects
            )
            await self._keep_referenced(conn, user_id, effects)
            if removed:
                effects.events.append(live.expunged(user_id, mailbox_id, removed))
            return removed

        return await self._run(body, user_changed=user_id)

    # --- copy / move ----------------------------------------------------------------------------

    def _link_all(self, pairs: list[tuple[Path, Path]], created: list[Path]) -> None:
        """Hard-link (or copy, across filesystems) each source to its target; fsync the target dirs."""
        dirs: dict[Path, None] = {}
        for source, target in pairs:
            if not source.exists():
                found = find_message(source.parent.parent, source.name)
                if found is None:
                    raise StorageError("SERVERBUG", "A message file is missing")
                source = found
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
                if self._fsync:
                    fd = os.open(target, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            created.append(target)
            dirs[target.parent] = None
        if self._fsync:
            for directory in dirs:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    async def _transfer(
        self, conn: asyncpg.Connection, user_id: int, source_id: int, dest: asyncpg.Record, uids: list[int] | None,
        *, move: bool, effects: _Effects,
    ) -> CopyResult:
        """Copy (or move) messages into `dest` with new UIDs in source-UID order (RFC 4315 COPYUID)."""
        rows = await conn.fetch(
            f"""SELECT {_COPIED_COLUMNS} FROM messages
                 WHERE mailbox_id = $1 AND ($2::bigint[] IS NULL OR uid = ANY($2::bigint[])) ORDER BY uid""",
            source_id, uids,
        )
        if not rows:
            return CopyResult(uidvalidity=dest["uidvalidity"], source_uids=(), dest_uids=())
        user = await self._user(conn, user_id, lock=True)
        total = sum(r["size"] for r in rows)
        if not move and user.quota_bytes and user.storage_used + total > user.quota_bytes:
            raise StorageError("OVERQUOTA", "Quota exceeded")
        folder = self._folder(user, dest["name"])
        if move:
            await self._delete_rows(
                conn, user_id, source_id, [r["uid"] for r in rows], only_deleted=False, effects=effects
            )
        now = int(time.time())
        pairs: list[tuple[Path, Path]] = []
        new_messages: list[sql.NewMessage] = []
        for position, row in enumerate(rows):
            delivery_id = uuid.uuid4()
            name = unique_name(delivery_id, 0, row["size"], self._hostname, ts=now)
            target = folder / "new" / name
            pairs.append((self._source_path(row["maildir_path"]), target))
            new_messages.append(sql.NewMessage(
                mailbox_id=dest["id"], position=position, user_id=user_id, delivery_id=delivery_id,
                maildir_path=self._relpath(target), size=row["size"], flags=sorted(row["flags"]),
                internal_date=row["internal_date"], message_id=row["message_id"], subject=row["subject"],
                from_addr=row["from_addr"], to_addrs=row["to_addrs"], cc_addrs=row["cc_addrs"],
                envelope_from=row["envelope_from"], sent_date=row["sent_date"], in_reply_to=row["in_reply_to"],
                references_hdr=row["references_hdr"], thread_id=row["thread_id"],
                has_attachments=row["has_attachments"], body_text=row["body_text"],
            ))
        await self._in_thread(ensure_folder, folder)
        await self._in_thread(self._link_all, pairs, effects.new_files)
        first_uid, modseq = await self._store(conn, new_messages, dest["id"])
        effects.notify[dest["id"]] = modseq
        await self._keep_referenced(conn, user_id, effects)
        return CopyResult(
            uidvalidity=dest["uidvalidity"],
            source_uids=tuple(r["uid"] for r in rows),
            dest_uids=tuple(range(first_uid, first_uid + len(rows))),
        )

    @staticmethod
    async def _store(conn: asyncpg.Connection, messages: list[sql.NewMessage], mailbox_id: int) -> tuple[int, int]:
        try:
            stored = await sql.store_messages(conn, messages)
        except asyncpg.NotNullViolationError:
            # store_messages' own hard limit: the user would go over quota (the mailbox row is locked).
            raise StorageError("OVERQUOTA", "Quota exceeded") from None
        return stored.reserved[mailbox_id]

    async def _copy_or_move(
        self, user_id: int, mailbox_id: int, uids: list[int], dest: str, *, move: bool
    ) -> CopyResult:
        dest_name = canonical_name(dest)

        async def body(conn: asyncpg.Connection, effects: _Effects) -> CopyResult:
            dest_id = await self._mailbox_id(conn, user_id, dest_name)
            locked = await self._lock_mailboxes(conn, user_id, [mailbox_id] + ([dest_id] if dest_id else []))
            if mailbox_id not in locked:
                raise StorageError("NONEXISTENT", "No such mailbox")
            if dest_id is None or dest_id not in locked:
                raise StorageError("TRYCREATE", "Destination mailbox does not exist")
            result = await self._transfer(
                conn, user_id, mailbox_id, locked[dest_id], list(uids), move=move, effects=effects
            )
            if move and result.source_uids:
                effects.events.append(live.moved(
                    user_id, mailbox_id, result.source_uids, dest_id, locked[dest_id]["name"], result.dest_uids
                ))
            return result

        return await self._run(body, user_changed=user_id)

    async def copy(self, user_id: int, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        """COPY: new UIDs in `dest` in source-UID order; TRYCREATE, OVERQUOTA."""
        return await self._copy_or_move(user_id, mailbox_id, uids, dest, move=False)

    async def move(self, user_id: int, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        """MOVE (RFC 6851): copy + expunge of the sources in one transaction."""
        return await self._copy_or_move(user_id, mailbox_id, uids, dest, move=True)

    # --- append ---------------------------------------------------------------------------------

    async def append(
        self, user_id: int, mailbox_name: str, data: bytes, flags: frozenset[str], internal_date: datetime | None
    ) -> AppendResult:
        """APPEND: a new message with the mailbox's next UID (RFC 4315 APPENDUID); TRYCREATE, OVERQUOTA."""
        name = canonical_name(mailbox_name)
        stored_flags = normalize_flags(flags)
        when = internal_date or datetime.now(UTC)
        summary: MessageSummary = (
            await self._in_thread(summarize, data) if len(data) > _INLINE_PARSE_LIMIT else summarize(data)
        )

        async def body(conn: asyncpg.Connection, effects: _Effects) -> AppendResult:
            mailbox_id = await self._mailbox_id(conn, user_id, name)
            locked = await self._lock_mailboxes(conn, user_id, [mailbox_id] if mailbox_id else [])
            if mailbox_id not in locked:
                raise StorageError("TRYCREATE", "Mailbox does not exist")
            mailbox = locked[mailbox_id]
            user = await self._user(conn, user_id, lock=True)
            if user.quota_bytes and user.storage_used + len(data) > user.quota_bytes:
                raise StorageError("OVERQUOTA", "Quota exceeded")
            folder = self._folder(user, name)
            delivery_id = uuid.uuid4()
            file = MaildirFile(
                folder=folder, name=unique_name(delivery_id, 0, len(data), self._hostname, ts=int(time.time())),
                data=data,
            )
            await self._in_thread(ensure_folder, folder)
            effects.new_files.append(file.new_path)
            await write_files_async([file], fsync=self._fsync, executor=self._executor)
            message = sql.NewMessage(
                mailbox_id=mailbox_id, position=0, user_id=user_id, delivery_id=delivery_id,
                maildir_path=self._relpath(file.new_path), size=len(data), flags=sorted(stored_flags),
                internal_date=when, message_id=summary.message_id, subject=summary.subject,
                from_addr=summary.from_addr[:_MAX_FIELD], to_addrs=summary.to_addrs[:_MAX_FIELD],
                cc_addrs=summary.cc_addrs[:_MAX_FIELD], envelope_from="", sent_date=summary.sent_date,
                in_reply_to=summary.in_reply_to, references_hdr=summary.references,
                thread_id=thread_id(summary.message_id, summary.in_reply_to, summary.references),
                has_attachments=summary.has_attachments, body_text=summary.body_text[:_MAX_INDEXED_BODY],
            )
            uid, modseq = await self._store(conn, [message], mailbox_id)
            effects.notify[mailbox_id] = modseq
            effects.events.append(live.new_message(
                user_id, mailbox_id, name, uid, message_id=summary.message_id or "", subject=summary.subject or "",
                from_addr=summary.from_addr[:_MAX_FIELD], source="append",
            ))
            return AppendResult(uidvalidity=mailbox["uidvalidity"], uid=uid)

        return await self._run(body, user_changed=user_id)

    # --- mailboxes ------------------------------------------------------------------------------

    async def _create_rows(
        self, conn: asyncpg.Connection, user_id: int, names: list[str], special_use: dict[str, str]
    ) -> dict[str, int]:
        """Insert the mailboxes of `names` that do not exist yet; returns name -> id of those created."""
        existing = {
            r["name"] for r in await conn.fetch(
                "SELECT name FROM mailboxes WHERE user_id = $1 AND name = ANY($2::text[])", user_id, names
            )
        }
        missing = [n for n in names if n not in existing]
        if not missing:
            return {}
        uidvalidities = await allocate_uidvalidities(conn, len(missing))
        created = {}
        for name, uidvalidity in zip(missing, uidvalidities, strict=True):
            created[name] = await conn.fetchval(
                """INSERT INTO mailboxes (user_id, name, special_use, uidvalidity) VALUES ($1, $2, $3, $4)
                   RETURNING id""",
                user_id, name, special_use.get(name), uidvalidity,
            )
        return created

    async def create_mailbox(self, user_id: int, name: str, special_use: str | None = None) -> None:
        """CREATE with missing parents (RFC 3501 §6.3.3); ALREADYEXISTS, CANNOT, USEATTR (RFC 6154)."""
        name = canonical_name(name)
        if name == INBOX or name.lower() == STARRED.lower():
            raise StorageError("ALREADYEXISTS", "Mailbox already exists")
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StorageError("USEATTR", f"Unsupported special-use attribute {special_use}")

        async def body(conn: asyncpg.Connection, effects: _Effects) -> None:
            user = await self._user(conn, user_id, lock=False)
            self._folder(user, name)
            if await self._mailbox_id(conn, user_id, name) is not None:
                raise StorageError("ALREADYEXISTS", "Mailbox already exists")
            try:
                await self._create_rows(conn, user_id, [*_parents(name), name], {name: special_use} if special_use else {})
            except asyncpg.UniqueViolationError:
                raise StorageError("ALREADYEXISTS", "Mailbox already exists") from None

        await self._run(body, user_changed=user_id)

    async def delete_mailbox(self, user_id: int, name: str) -> None:
        """DELETE: the mailbox and its messages; children stay (RFC 3501 §6.3.4); INBOX cannot go."""
        name = canonical_name(name)
        if name == INBOX or name.lower() == STARRED.lower():
            raise StorageError("CANNOT", f"{name} cannot be deleted")

        async def body(conn: asyncpg.Connection, effects: _Effects) -> None:
            mailbox_id = await self._mailbox_id(conn, user_id, name)
            if mailbox_id is None or not await self._lock_mailboxes(conn, user_id, [mailbox_id]):
                raise StorageError("NONEXISTENT", "No such mailbox")
            rows = await conn.fetch("DELETE FROM messages WHERE mailbox_id = $1 RETURNING size, maildir_path", mailbox_id)
            await conn.execute("DELETE FROM mailboxes WHERE id = $1", mailbox_id)
            if rows:
                await conn.execute(
                    """UPDATE users SET storage_used = storage_used - $2, message_count = message_count - $3
                        WHERE id = $1""",
                    user_id, sum(r["size"] for r in rows), len(rows),
                )
            effects.obsolete_files.extend(self._source_path(r["maildir_path"]) for r in rows)
            await self._keep_referenced(conn, user_id, effects)
            effects.forget.append(mailbox_id)
            user = await self._user(conn, user_id, lock=False)
            return self._folder(user, name)

        folder = await self._run(body, user_changed=user_id)
        await self._in_thread(_remove_empty_folder, folder)

    async def rename_mailbox(self, user_id: int, old: str, new: str) -> None:
        """RENAME with children (RFC 3501 §6.3.5); INBOX's messages move to `new`, INBOX stays empty."""
        old, new = canonical_name(old), canonical_name(new)
        if old.lower() == STARRED.lower():
            raise StorageError("CANNOT", f"{STARRED} cannot be renamed")
        if new in (INBOX, old) or new.lower() == STARRED.lower():
            raise StorageError("ALREADYEXISTS", "Mailbox already exists")
        if new.startswith(old + "/"):
            raise StorageError("CANNOT", "Cannot rename a mailbox into its own child")
        if old == INBOX:
            await self._rename_inbox(user_id, new)
            return

        async def body(conn: asyncpg.Connection, effects: _Effects) -> None:
            user = await self._user(conn, user_id, lock=False)
            candidates = await conn.fetch(
                """SELECT id FROM mailboxes WHERE user_id = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '/')""",
                user_id, old,
            )
            locked = await self._lock_mailboxes(conn, user_id, [r["id"] for r in candidates])
            if not any(r["name"] == old for r in locked.values()):
                raise StorageError("NONEXISTENT", "No such mailbox")
            renames = {mid: new + r["name"][len(old):] for mid, r in locked.items()}
            for target in renames.values():
                self._folder(user, target)
            clash = await conn.fetchval(
                """SELECT count(*) FROM mailboxes
                    WHERE user_id = $1 AND name = ANY($2::text[]) AND NOT id = ANY($3::bigint[])""",
                user_id, list(renames.values()), list(renames),
            )
            if clash:
                raise StorageError("ALREADYEXISTS", "Mailbox already exists")
            # Two steps, so a new name equal to another renamed mailbox's old name never clashes midway.
            await conn.execute(
                "UPDATE mailboxes SET name = E'\\x01' || id::text WHERE id = ANY($1::bigint[])", list(renames)
            )
            await conn.execute(
                """UPDATE mailboxes AS m SET name = d.name FROM unnest($1::bigint[], $2::text[]) AS d(id, name)
                    WHERE m.id = d.id""",
                list(renames), list(renames.values()),
            )
            await self._create_rows(conn, user_id, _parents(new), {})
            await self._relink(conn, user, renames, effects)
            return [self._folder(user, r["name"]) for r in locked.values()]

        for folder in await self._run(body, user_changed=user_id):
            await self._in_thread(_remove_empty_folder, folder)

    async def _relink(
        self, conn: asyncpg.Connection, user: _User, renames: dict[int, str], effects: _Effects
    ) -> None:
        """Hard-link the messages of renamed mailboxes into their new folders and repoint the rows."""
        rows = await conn.fetch(
            "SELECT id, mailbox_id, maildir_path FROM messages WHERE mailbox_id = ANY($1::bigint[])", list(renames)
        )
        if not rows:
            return
        pairs: list[tuple[Path, Path]] = []
        folders = {mid: self._folder(user, name) for mid, name in renames.items()}
        for row in rows:
            source = self._source_path(row["maildir_path"])
            pairs.append((source, folders[row["mailbox_id"]] / "new" / source.name))
        for folder in set(folders.values()):
            await self._in_thread(ensure_folder, folder)
        await self._in_thread(self._link_all, pairs, effects.new_files)
        await conn.execute(
            """UPDATE messages AS m SET maildir_path = d.p FROM unnest($1::bigint[], $2::text[]) AS d(id, p)
                WHERE m.id = d.id""",
            [r["id"] for r in rows], [self._relpath(target) for _, target in pairs],
        )
        effects.obsolete_files.extend(source for source, _ in pairs)

    async def _rename_inbox(self, user_id: int, new: str) -> None:
        """RFC 3501 §6.3.5: renaming INBOX moves all its messages to a new mailbox; INBOX stays, empty."""

        async def body(conn: asyncpg.Connection, effects: _Effects) -> None:
            user = await self._user(conn, user_id, lock=False)
            self._folder(user, new)
            if await self._mailbox_id(conn, user_id, new) is not None:
                raise StorageError("ALREADYEXISTS", "Mailbox already exists")
            created = await self._create_rows(conn, user_id, [*_parents(new), new], {})
            inbox_id = await self._mailbox_id(conn, user_id, INBOX)
            if inbox_id is None:
                raise StorageError("NONEXISTENT", "No INBOX")
            locked = await self._lock_mailboxes(conn, user_id, [inbox_id, created[new]])
            await self._transfer(conn, user_id, inbox_id, locked[created[new]], None, move=True, effects=effects)

        await self._run(body, user_changed=user_id)

    async def set_subscribed(self, user_id: int, name: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE an existing mailbox; NONEXISTENT otherwise."""
        name = canonical_name(name)
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE mailboxes SET subscribed = $3 WHERE user_id = $1 AND name = $2", user_id, name, subscribed
            )
        if status == "UPDATE 0":
            raise StorageError("NONEXISTENT", "No such mailbox")


def _remove_empty_folder(folder: Path) -> None:
    """Best effort: drop a deleted sub-folder's directories when nothing else lives there."""
    if not folder.name.startswith("."):
        return
    for sub in (*SUBDIRS, FOLDER_MARKER):
        path = folder / sub
        try:
            path.rmdir() if path.is_dir() else path.unlink()
        except OSError:
            return
    try:
        folder.rmdir()
    except OSError:
        pass
