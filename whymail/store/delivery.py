"""Durable delivery of a batch: files fsynced in Maildir, then one PostgreSQL transaction.

This is the core of the MailboxShard's write path and knows nothing about Ray. The order is what
makes a `250` safe: body files reach the disk (tmp -> fsync -> rename -> fsync dir) before the
metadata commits, and if the commit fails the files are removed again, so a failure leaves nothing
half-written. Every item carries a delivery id, so a retried batch stores each message exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from whymail.db import messages as sql
from whymail.maildir import (
    MaildirFile,
    MaildirNameError,
    ensure_folder,
    folder_dir,
    remove_files,
    unique_name,
    write_files_async,
)
from whymail.mime.summary import summarize, thread_id
from whymail.notify import alerts
from whymail.notify.events import LiveEvent, new_message
from whymail.notify.store import Notification, notification_event
from whymail.store.models import DeliveryBatch, DeliveryItem, DeliveryOutcome, DeliveryReport
from whymail.store.notifier import ChangeNotifier

log = logging.getLogger(__name__)

_MAX_FIELD = 2000
_INLINE_PARSE_LIMIT = 256 * 1024
# Full-text indexing is the largest per-message cost in PostgreSQL; the first 32 KiB of text find it.
_MAX_INDEXED_BODY = 32 * 1024


def _ensure_folders(folders: list[Path]) -> None:
    for folder in folders:
        ensure_folder(folder)


def _refusal(item: DeliveryItem, code: int, enhanced: str, text: str) -> DeliveryOutcome:
    return DeliveryOutcome(
        delivery_id=item.delivery_id, ok=False, error_code=code, error_enhanced=enhanced, error_text=text
    )


class MailStore:
    """Writes deliveries for the users one shard owns; caches mailbox ids and storage use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        maildir_root: Path,
        hostname: str,
        *,
        fsync: bool,
        executor: Executor,
        notifier: ChangeNotifier | None = None,
        events: Callable[[list[LiveEvent]], None] | None = None,
    ) -> None:
        """`events(batch)` receives the live events of each commit (it must not block)."""
        self._notifier = notifier
        self._events = events
        self._pool = pool
        self._root = maildir_root
        self._hostname = hostname
        self._fsync = fsync
        self._executor = executor
        self._mailbox_ids: dict[tuple[int, str], int] = {}
        self._known_users: set[int] = set()
        self._usage: dict[int, int] = {}
        self._folders: dict[tuple[str, str, str], Path] = {}

    def forget_user(self, user_id: int) -> None:
        """Drop what is cached about a user (after a rename, delete or quota change)."""
        self._known_users.discard(user_id)
        self._usage.pop(user_id, None)
        self._mailbox_ids = {k: v for k, v in self._mailbox_ids.items() if k[0] != user_id}
        self._folders.clear()

    async def _load_users(self, conn: asyncpg.Connection, user_ids: set[int]) -> None:
        missing = [u for u in user_ids if u not in self._known_users]
        if not missing:
            return
        for ref in await sql.mailboxes_of_users(conn, missing):
            key = "INBOX" if ref.name.upper() == "INBOX" else ref.name
            self._mailbox_ids[(ref.user_id, key)] = ref.id
        self._usage.update(await sql.storage_used(conn, missing))
        self._known_users.update(missing)

    def _mailbox_for(self, item: DeliveryItem) -> tuple[int, str] | None:
        user_id = item.recipient.user_id
        name = "INBOX" if item.mailbox.upper() == "INBOX" else item.mailbox
        if (user_id, name) in self._mailbox_ids:
            return self._mailbox_ids[(user_id, name)], name
        if (user_id, "INBOX") in self._mailbox_ids:  # a vanished folder falls back to INBOX
            return self._mailbox_ids[(user_id, "INBOX")], "INBOX"
        return None

    async def deliver_batch(self, batch: DeliveryBatch) -> DeliveryReport:
        """Store every item of `batch` durably; one outcome per item, in order."""
        outcomes: dict[int, DeliveryOutcome] = {}
        async with self._pool.acquire() as conn:
            await self._load_users(conn, {item.recipient.user_id for item in batch.items})
            targets: dict[int, tuple[int, str]] = {}
            for index, item in enumerate(batch.items):
                target = self._mailbox_for(item)
                if target is None:
                    outcomes[index] = _refusal(item, 550, "5.1.1", "Recipient no longer exists")
                else:
                    targets[index] = target
            # Delivery ids are fresh on a first attempt: only a retried batch can meet its own rows.
            already = (
                await sql.delivered_already(conn, [(targets[i][0], batch.items[i].delivery_id) for i in targets])
                if batch.attempt > 0
                else {}
            )
            pending: list[int] = []
            planned_usage = dict(self._usage)
            for index, (mailbox_id, _name) in targets.items():
                item = batch.items[index]
                uid = already.get((mailbox_id, item.delivery_id))
                if uid is not None:
                    outcomes[index] = DeliveryOutcome(
                        delivery_id=item.delivery_id, ok=True, uid=uid, mailbox_id=mailbox_id
                    )
                    continue
                size = len(batch.bodies[item.body_index])
                user = item.recipient
                used = planned_usage.get(user.user_id, 0)
                if user.quota_bytes and used + size > user.quota_bytes:
                    outcomes[index] = _refusal(item, 452, "4.2.2", "Mailbox full, try again later")
                    continue
                planned_usage[user.user_id] = used + size
                pending.append(index)
            if pending:
                await self._store(conn, batch, pending, targets, outcomes)
        ordered = [outcomes[i] for i in range(len(batch.items))]
        touched = {batch.items[i].recipient.user_id for i in range(len(batch.items))}
        return DeliveryReport(
            outcomes=ordered, usage={u: self._usage[u] for u in touched if u in self._usage}
        )

    async def _store(
        self,
        conn: asyncpg.Connection,
        batch: DeliveryBatch,
        pending: list[int],
        targets: dict[int, tuple[int, str]],
        outcomes: dict[int, DeliveryOutcome],
    ) -> None:
        summaries = {}
        loop = asyncio.get_running_loop()
        for index in pending:
            body_index = batch.items[index].body_index
            if body_index not in summaries:
                body = batch.bodies[body_index]
                # Large MIME parsing would stall the shard's loop: it goes to a thread.
                summaries[body_index] = (
                    await loop.run_in_executor(self._executor, summarize, body)
                    if len(body) > _INLINE_PARSE_LIMIT
                    else summarize(body)
                )
        files: list[MaildirFile] = []
        relpaths: list[str] = []
        storable: list[int] = []
        for index in pending:
            item = batch.items[index]
            body = batch.bodies[item.body_index]
            key = (item.recipient.domain, item.recipient.local_part, targets[index][1])
            folder = self._folders.get(key)
            if folder is None:
                try:
                    folder = folder_dir(self._root, *key)
                except MaildirNameError as exc:
                    # One unstorable recipient is refused alone; the rest of the batch goes on.
                    log.error("cannot store for %s@%s: %s", key[1], key[0], exc)
                    outcomes[index] = _refusal(item, 550, "5.2.0", "Mailbox cannot be stored on this server")
                    continue
                self._folders[key] = folder
            # The time part comes from the delivery, not the clock: a retry rewrites the same file.
            name = unique_name(item.delivery_id, 0, len(body), self._hostname, ts=int(item.internal_date))
            files.append(MaildirFile(folder=folder, name=name, data=body))
            relpaths.append(f"{folder.relative_to(self._root)}/new/{name}")
            storable.append(index)
        if not storable:
            return
        try:
            # ensure_folder is cheap when the folder exists and recreates one an operator removed.
            folders = list({f.folder for f in files})
            await loop.run_in_executor(self._executor, _ensure_folders, folders)
            await write_files_async(files, fsync=self._fsync, executor=self._executor)
            new_usage = await self._commit(conn, batch, storable, targets, summaries, relpaths, outcomes)
        except Exception as exc:
            await self._recover(batch, storable, targets, files, outcomes, exc)
            return
        self._warn_quota(batch, storable, new_usage)
        self._usage.update(new_usage)

    def _warn_quota(self, batch: DeliveryBatch, stored: list[int], usage: dict[int, int]) -> None:
        """After a commit: a `quota_warning` for each user this batch took past 80, 90 or 100 % of the
        quota (written in the background; a lost warning never fails a delivery)."""
        added: dict[int, int] = {}
        quotas: dict[int, int] = {}
        for index in stored:
            item = batch.items[index]
            user_id = item.recipient.user_id
            added[user_id] = added.get(user_id, 0) + len(batch.bodies[item.body_index])
            quotas[user_id] = item.recipient.quota_bytes
        notes = []
        for user_id, after in usage.items():
            quota = quotas.get(user_id, 0)
            percent = alerts.quota_threshold_crossed(after - added.get(user_id, 0), after, quota)
            if percent is not None:
                notes.append(alerts.quota_warning(user_id, percent, after, quota))
        if notes:
            alerts.store_in_background(self._pool, notes, then=self._announce)

    def _announce(self, stored: list[Notification]) -> None:
        if self._events is not None:
            self._events([notification_event(n) for n in stored])

    async def _recover(self, batch, storable, targets, files, outcomes, exc: Exception) -> None:
        """After a failed store: keep what did commit (an overlapping attempt), remove only the rest.

        A file is deleted only when the database says no row points to it; when the database cannot
        be asked, files stay (an orphan file is harmless, a row without its file is lost mail).
        """
        log.error("delivery batch of %d failed: %r", len(storable), exc)
        for index in storable:
            self.forget_user(batch.items[index].recipient.user_id)
        keys = [(targets[i][0], batch.items[i].delivery_id) for i in storable]
        try:
            async with self._pool.acquire() as conn:
                committed = await sql.delivered_already(conn, keys)
        except Exception as check_exc:
            log.error("cannot tell what committed (%r): leaving the batch's files in place", check_exc)
            committed = None
        orphans: list[Path] = []
        for index, key, file in zip(storable, keys, files, strict=True):
            uid = committed.get(key) if committed is not None else None
            if uid is not None:
                outcomes[index] = DeliveryOutcome(
                    delivery_id=key[1], ok=True, uid=uid, mailbox_id=key[0]
                )
                continue
            if committed is not None:
                orphans.append(file.folder / "new" / file.name)
            outcomes[index] = _refusal(
                batch.items[index], 451, "4.3.0", "Temporary failure storing the message, try again later"
            )
        if orphans:
            await asyncio.get_running_loop().run_in_executor(self._executor, remove_files, orphans)

    async def _commit(self, conn, batch, pending, targets, summaries, relpaths, outcomes) -> dict[int, int]:
        positions: dict[int, int] = {}
        messages: list[sql.NewMessage] = []
        for index, relpath in zip(pending, relpaths, strict=True):
            item = batch.items[index]
            mailbox_id = targets[index][0]
            summary = summaries[item.body_index]
            position = positions.get(mailbox_id, 0)
            positions[mailbox_id] = position + 1
            messages.append(
                sql.NewMessage(
                    mailbox_id=mailbox_id,
                    position=position,
                    user_id=item.recipient.user_id,
                    delivery_id=item.delivery_id,
                    maildir_path=relpath,
                    size=len(batch.bodies[item.body_index]),
                    flags=list(item.flags),
                    internal_date=datetime.fromtimestamp(item.internal_date, UTC),
                    message_id=summary.message_id,
                    subject=summary.subject,
                    from_addr=summary.from_addr[:_MAX_FIELD],
                    to_addrs=summary.to_addrs[:_MAX_FIELD],
                    cc_addrs=summary.cc_addrs[:_MAX_FIELD],
                    envelope_from=item.envelope_from[:_MAX_FIELD],
                    sent_date=summary.sent_date,
                    in_reply_to=summary.in_reply_to,
                    references_hdr=summary.references,
                    thread_id=thread_id(summary.message_id, summary.in_reply_to, summary.references),
                    has_attachments=summary.has_attachments,
                    body_text=summary.body_text[:_MAX_INDEXED_BODY],
                )
            )
        # One statement: UIDs, rows and counters commit together or not at all.
        stored = await sql.store_messages(conn, messages)
        if self._notifier is not None:  # committed: wake IMAP IDLE waiters of these mailboxes
            for mailbox_id, (_first_uid, modseq) in stored.reserved.items():
                self._notifier.notify(mailbox_id, modseq)
        live: list[LiveEvent] = []
        for index, message in zip(pending, messages, strict=True):
            first_uid, _modseq = stored.reserved[message.mailbox_id]
            outcomes[index] = DeliveryOutcome(
                delivery_id=message.delivery_id, ok=True, uid=first_uid + message.position,
                mailbox_id=message.mailbox_id,
            )
            if self._events is not None:
                live.append(new_message(
                    message.user_id, message.mailbox_id, targets[index][1], first_uid + message.position,
                    message_id=message.message_id or "", subject=message.subject or "",
                    from_addr=message.from_addr or "",
                ))
        if live:
            self._events(live)
        return stored.usage
