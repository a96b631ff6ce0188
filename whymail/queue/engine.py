"""The delivery engine behind a DeliveryQueue actor (no Ray here): claim, deliver, record, bounce.

One round: claim up to `queue.batch_size` due rows, deliver the local ones through the shards and
the remote ones per destination domain (one SMTP connection per domain for all its messages),
merge every recipient's answer into its row as soon as it is known, then end each row's attempt:

- every recipient delivered → `sent`;
- no recipient waiting any more, some failed with a 5xx → `failed` (the sender got a DSN);
- some recipients deferred (4xx, no connection) → `deferred` with exponential backoff, unless the
  attempts or the lifetime are used up → `dead` (dead letter: listed and retried by operators)
  and a DSN for them.

DSNs go to the envelope sender (local senders get them in their INBOX through the same queue), from
the null reverse-path, and never for a message that has the null sender itself (RFC 3464 §2, RFC
5321 §4.5.5): a bounce is never bounced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from whymail.config import Config
from whymail.notify import alerts
from whymail.notify.writer import NotificationWriter
from whymail.outbound.models import OutboundMessage, RecipientResult
from whymail.queue import store
from whymail.queue.retry import retry_delay
from whymail.queue.spool import Spool
from whymail.queue.store import QueueEntry, RecipientState
from whymail.store.models import DeliveryItem, DeliveryOutcome, Recipient

log = logging.getLogger("whymail.queue")

LocalDeliver = Callable[[bytes, list[DeliveryItem]], Awaitable[list[DeliveryOutcome]]]
SendRemote = Callable[
    [str, list[OutboundMessage], Callable[[str | int, list[RecipientResult]], Awaitable[None]]],
    Awaitable[dict],
]
BuildDsn = Callable[..., bytes]

DSN_PRIORITY = 10


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _state(result: RecipientResult) -> RecipientState:
    return RecipientState(
        status=result.status, code=result.code, enhanced=result.enhanced, text=result.text,
        remote=result.remote_host, at=time.time(),
    )


class QueueEngine:
    def __init__(
        self,
        *,
        worker: str,
        pool: asyncpg.Pool,
        spool: Spool,
        config: Config,
        directory,  # `.current` -> DirectorySnapshot | None
        local_deliver: LocalDeliver,
        send_remote: SendRemote,
        build_dsn: BuildDsn,
        executor: concurrent.futures.Executor | None = None,
        rng: random.Random | None = None,
        notifications: NotificationWriter | None = None,
    ) -> None:
        self.worker = worker
        self._pool = pool
        self._spool = spool
        self._config = config
        self._directory = directory
        self._local_deliver = local_deliver
        self._send_remote = send_remote
        self._build_dsn = build_dsn
        self._executor = executor
        self._rng = rng or random.Random()
        # Stores (in batches) and announces the submitters' notifications and the admins' alerts.
        self._notifications = notifications
        self._destinations = asyncio.Semaphore(32)
        self._per_domain: dict[str, asyncio.Semaphore] = {}
        self.stats = {"rounds": 0, "entries": 0, "delivered": 0, "deferred": 0, "failed": 0, "dsns": 0}

    # -- one round ---------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch and see it through; returns how many rows were claimed."""
        entries = await self.claim_batch()
        if entries:
            await self.process(entries)
        return len(entries)

    async def claim_batch(self) -> list[QueueEntry]:
        """Up to `queue.batch_size` due rows, and no more message bytes than `queue.round_max_bytes`
        (at least one row): the rest goes back at once for the next round."""
        q = self._config.queue
        async with self._pool.acquire() as conn:
            entries = await store.claim(conn, self.worker, q.batch_size)
            kept: list[QueueEntry] = []
            budget = q.round_max_bytes
            paths: set[str] = set()
            for entry in entries:
                size = 0 if entry.message_path in paths else entry.size
                if kept and size > budget:
                    break
                kept.append(entry)
                paths.add(entry.message_path)
                budget -= size
            if len(kept) < len(entries):
                await store.unclaim(conn, self.worker, [e.id for e in entries[len(kept):]])
        return kept

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest waiting row is due (0 if one is due now), None if none waits."""
        async with self._pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM outbound_queue "
                "WHERE status IN ('pending', 'deferred')"
            )
        return None if value is None else max(0.0, float(value))

    async def process(self, entries: list[QueueEntry]) -> None:
        """Deliver claimed rows: local ones through the shards, remote ones per destination domain."""
        snapshot = self._directory.current
        if snapshot is None:
            # Without the directory we cannot tell our own domains from the world's: wait for it.
            async with self._pool.acquire() as conn:
                await store.unclaim(conn, self.worker, [e.id for e in entries])
            return
        self.stats["rounds"] += 1
        self.stats["entries"] += len(entries)
        bodies: dict[str, bytes] = {}
        local: list[QueueEntry] = []
        remote: dict[str, list[QueueEntry]] = {}
        for entry in entries:
            if snapshot.is_local_domain(entry.recipient_domain):
                local.append(entry)
            else:
                remote.setdefault(entry.recipient_domain, []).append(entry)
        jobs = [self._deliver_local(local, bodies)] if local else []
        jobs += [self._deliver_domain(domain, group, bodies) for domain, group in remote.items()]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("queue round: a destination failed unexpectedly: %r", result, exc_info=result)

    # -- local recipients ---------------------------------------------------------------------------

    async def _body(self, path: str, bodies: dict[str, bytes]) -> bytes:
        """A spool file, read once per round however many rows name it."""
        if path not in bodies:
            bodies[path] = await asyncio.to_thread(self._spool.read, path)
        return bodies[path]

    async def _deliver_local(self, entries: list[QueueEntry], bodies: dict[str, bytes]) -> None:
        # Concurrently: the shard batchers put the deliveries of all these rows into few Ray calls.
        results = await asyncio.gather(
            *(self._deliver_local_entry(e, bodies) for e in entries), return_exceptions=True
        )
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                log.error("local delivery of queue entry %d failed: %r", entry.id, result, exc_info=result)

    async def _deliver_local_entry(self, entry: QueueEntry, bodies: dict[str, bytes]) -> None:
        snapshot = self._directory.current
        results: dict[str, RecipientState] = {}
        items: list[DeliveryItem] = []
        owners: list[str] = []
        forwards: dict[str, tuple[str, ...]] = {}
        for rcpt in entry.open_recipients():
            resolution = snapshot.resolve(rcpt) if snapshot is not None else None
            if resolution is None:
                results[rcpt] = RecipientState(status="deferred", code=451, enhanced="4.3.0",
                                               text="Directory unavailable", at=time.time())
            elif resolution.kind == "local":
                for user in resolution.users:
                    items.append(
                        DeliveryItem(
                            delivery_id=uuid.uuid5(entry.delivery_id, f"{rcpt.lower()}|{user.user_id}"),
                            body_index=0,
                            recipient=Recipient(user_id=user.user_id, domain=user.domain,
                                                local_part=user.local_part, quota_bytes=user.quota_bytes),
                            envelope_from=entry.sender,
                            internal_date=time.time(),
                        )
                    )
                    owners.append(rcpt)
                if resolution.remote_addresses:
                    forwards[rcpt] = resolution.remote_addresses
                results.setdefault(rcpt, RecipientState(status="delivered", code=250, enhanced="2.0.0",
                                                        text="Delivered locally", at=time.time()))
            elif resolution.kind == "disabled":
                results[rcpt] = RecipientState(status="failed", code=550, enhanced="5.2.1",
                                               text="Mailbox disabled", at=time.time())
            else:
                results[rcpt] = RecipientState(status="failed", code=550, enhanced="5.1.1",
                                               text="No such user here", at=time.time())
        if items:
            try:
                body = await self._body(entry.message_path, bodies)
            except OSError as exc:
                log.error("spool file of queue entry %d unreadable: %r", entry.id, exc)
                await self._end_attempt(entry, {r: RecipientState(
                    status="deferred", code=451, enhanced="4.3.0", text="Spool file unreadable",
                    at=time.time()) for r in entry.open_recipients()})
                return
            outcomes = await self._local_deliver(body, items)
            for rcpt, outcome in zip(owners, outcomes, strict=True):
                if not outcome.ok:
                    worse = results.get(rcpt)
                    if worse is None or worse.status == "delivered" or outcome.error_code < 500:
                        results[rcpt] = RecipientState(
                            status="deferred" if outcome.error_code < 500 else "failed",
                            code=outcome.error_code, enhanced=outcome.error_enhanced,
                            text=outcome.error_text, at=time.time(),
                        )
        if forwards:
            await self._forward(entry, forwards)
        await self._end_attempt(entry, results)

    async def _forward(self, entry: QueueEntry, forwards: dict[str, tuple[str, ...]]) -> None:
        """Alias destinations outside our domains: new submissions sharing the spool file, one per
        local recipient, with ids derived from it, so that a retried attempt never forwards twice."""
        async with self._pool.acquire() as conn:
            for rcpt, addresses in forwards.items():
                await store.enqueue(
                    conn,
                    delivery_id=uuid.uuid5(entry.delivery_id, f"forward|{rcpt.lower()}"),
                    user_id=None, sender=entry.sender, recipients=list(addresses),
                    message_path=entry.message_path, size=entry.size, max_attempts=entry.max_attempts,
                    lifetime=self._config.queue.max_lifetime, priority=entry.priority,
                )

    # -- remote recipients --------------------------------------------------------------------------

    async def _deliver_domain(self, domain: str, entries: list[QueueEntry], bodies: dict[str, bytes]) -> None:
        if len(self._per_domain) > 10_000:  # forget idle destinations
            self._per_domain = {d: sem for d, sem in self._per_domain.items() if sem.locked()}
        per_domain = self._per_domain.setdefault(
            domain, asyncio.Semaphore(self._config.queue.connections_per_destination)
        )
        async with self._destinations, per_domain:
            messages: list[OutboundMessage] = []
            unreadable: list[QueueEntry] = []
            for entry in entries:
                try:
                    body = await self._body(entry.message_path, bodies)
                except OSError as exc:
                    log.error("spool file of queue entry %d unreadable: %r", entry.id, exc)
                    unreadable.append(entry)
                    continue
                messages.append(OutboundMessage(id=entry.id, sender=entry.sender,
                                                recipients=entry.open_recipients(), body=body))
            by_id = {entry.id: entry for entry in entries}
            recorded: dict[int, dict[str, RecipientState]] = {}

            ended: set[int] = set()

            async def on_message(message_id: str | int, results: list[RecipientResult]) -> None:
                # Committed at once: a worker killed after this never sends these recipients again.
                entry = by_id[int(message_id)]
                states = {r.recipient: _state(r) for r in results}
                if all(r.status == "delivered" for r in results):
                    ended.add(entry.id)  # the usual case: the attempt ends here, in one statement
                    await self._end_attempt(entry, states)
                    return
                recorded[entry.id] = states
                async with self._pool.acquire() as conn:
                    await store.record_results(conn, entry.id, self.worker, states)

            try:
                answers = await self._send_remote(domain, messages, on_message) if messages else {}
            except Exception as exc:  # the client never raises for remote trouble; this is our bug
                log.exception("delivery to %s failed unexpectedly", domain)
                answers = {
                    m.id: [RecipientResult(recipient=r, status="deferred", code=451, enhanced="4.3.0",
                                           text=f"Local error: {type(exc).__name__}") for r in m.recipients]
                    for m in messages
                }
            for entry in unreadable:
                answers[entry.id] = [RecipientResult(recipient=r, status="deferred", code=451, enhanced="4.3.0",
                                                     text="Spool file unreadable")
                                     for r in entry.open_recipients()]
            for message_id, results in answers.items():
                entry = by_id[int(message_id)]
                if entry.id in ended:
                    continue
                states = {r.recipient: _state(r) for r in results}
                # Answers already committed win over anything found later (an error after them).
                states.update(recorded.get(entry.id, {}))
                await self._end_attempt(entry, states)

    # -- ending an attempt ----------------------------------------------------------------------------

    async def _end_attempt(self, entry: QueueEntry, new: dict[str, RecipientState]) -> None:
        merged = {**entry.recipient_results, **new}
        statuses = [merged[r].status if r in merged else "deferred" for r in entry.recipients]
        attempts = entry.attempts + 1
        now = _now()
        waiting = [r for r, s in zip(entry.recipients, statuses, strict=True) if s not in ("delivered", "failed")]
        gave_up = bool(waiting) and (attempts >= entry.max_attempts or now >= entry.expires_at)
        if gave_up:
            why = "delivery time expired" if now >= entry.expires_at else f"gave up after {attempts} attempts"
            for rcpt in waiting:
                last = merged.get(rcpt)
                text = f"{why}; last answer: {last.code} {last.text}" if last and last.code else why
                merged[rcpt] = new[rcpt] = RecipientState(
                    status="failed", code=last.code if last and last.code else 450, enhanced="4.4.7",
                    text=text[:500], remote=last.remote if last else "", at=time.time(),
                )
        # DSN for recipients that failed now and were not reported yet.
        to_bounce = [r for r in entry.recipients if merged.get(r) and merged[r].status == "failed"
                     and not merged[r].bounced]
        delay_warned = False
        if to_bounce and await self._send_dsn(entry, {r: merged[r] for r in to_bounce}, "failed"):
            for rcpt in to_bounce:
                merged[rcpt] = new[rcpt] = merged[rcpt].model_copy(update={"bounced": True})
        if waiting and not gave_up:
            warn_after = self._config.queue.delay_warning
            if (warn_after > 0 and entry.delay_warned_at is None
                    and now - entry.created_at >= dt.timedelta(seconds=warn_after)):
                delay_warned = await self._send_dsn(entry, {r: merged[r] for r in waiting if r in merged}, "delayed")
        if gave_up:
            status = "dead"
        elif waiting:
            status = "deferred"
        elif any(s == "failed" for s in statuses):
            status = "failed"
        else:
            status = "sent"
        q = self._config.queue
        delay = retry_delay(attempts, base=q.retry_base, cap=q.retry_max_delay, rng=self._rng)
        errors = [f"{r}: {merged[r].code} {merged[r].text}" for r in entry.recipients
                  if r in merged and merged[r].status != "delivered"]
        last_error = "; ".join(errors)[:2000] if errors else None
        for key, count in (("delivered", statuses.count("delivered")), ("failed", statuses.count("failed")),
                           ("deferred", len(waiting) if not gave_up else 0)):
            self.stats[key] += count
        async with self._pool.acquire() as conn:
            ok = await store.finish_attempt(
                conn, entry.id, self.worker, status=status, attempts=attempts,
                next_attempt_at=now + dt.timedelta(seconds=delay) if status == "deferred" else None,
                last_error=last_error, results=new, delay_warned=delay_warned,
            )
        if not ok:
            log.warning("queue entry %d: claim lost before the attempt ended (released as stale?)", entry.id)
        else:  # tell the submitting user, without waiting and without ever failing the delivery
            note = alerts.queue_outcome(
                user_id=entry.user_id, status=status, attempts=attempts, queue_id=entry.id,
                delivery_id=str(entry.delivery_id), recipients=entry.recipients,
                recipient_domain=entry.recipient_domain, error=last_error,
            )
            if self._notifications is None:  # no writer (an engine built bare): store, do not announce
                alerts.store_in_background(self._pool, [note] if note is not None else [])
            else:
                if note is not None:
                    self._notifications.add([note])
                if status == "dead":
                    self._notifications.queue_entry_dead(alerts.DeadEntry(
                        queue_id=entry.id, recipient_domain=entry.recipient_domain, sender=entry.sender,
                        error=last_error,
                    ))
        log.info("queue entry %d to %s: %s", entry.id, entry.recipient_domain, status,
                 extra={"queue_id": entry.id, "status": status, "attempts": attempts, "error": last_error})

    async def _send_dsn(self, entry: QueueEntry, states: dict[str, RecipientState], action: str) -> bool:
        """Queue a DSN to the envelope sender; False (and nothing sent) for the null sender."""
        if not entry.sender or not states:
            return False  # never bounce a bounce
        try:
            original = await asyncio.to_thread(self._spool.read, entry.message_path)
        except OSError:
            original = b""
        hostname = self._config.server.hostname
        q = self._config.queue
        results = [
            RecipientResult(recipient=r, status="failed" if action == "failed" else "deferred", code=s.code or 450,
                            enhanced=s.enhanced or ("5.0.0" if action == "failed" else "4.0.0"), text=s.text,
                            remote_host=s.remote)
            for r, s in states.items()
        ]
        data = self._build_dsn(
            reporting_mta=hostname, original_sender=entry.sender, original_message=original,
            recipients=results, action=action, arrival_date=entry.created_at, envid=entry.dsn_envid,
            ret=entry.dsn_ret, postmaster=f"postmaster@{hostname}",
            will_retry_until=entry.expires_at if action == "delayed" else None,
        )
        delivery_id = uuid.uuid5(entry.delivery_id, f"dsn|{action}|{entry.recipient_domain}|{entry.attempts}")
        path = await self._spool.write(delivery_id, data, self._executor)
        async with self._pool.acquire() as conn:
            await store.enqueue(
                conn, delivery_id=delivery_id, user_id=None, sender="", recipients=[entry.sender],
                message_path=path, size=len(data), max_attempts=q.max_retries + 1, lifetime=q.max_lifetime,
                priority=DSN_PRIORITY,
            )
        self.stats["dsns"] += 1
        log.info("queue entry %d: %s DSN to %s for %d recipient(s)", entry.id, action, entry.sender, len(states))
        return True

    # -- housekeeping -----------------------------------------------------------------------------------

    async def release_own_claims(self) -> int:
        async with self._pool.acquire() as conn:
            return await store.release_claims(conn, self.worker)

    async def housekeeping(self) -> tuple[int, int]:
        """Release stale claims of vanished workers; delete old finished rows and their spool files."""
        async with self._pool.acquire() as conn:
            await store.renew_claims(conn, self.worker)
            released = await store.release_claims(
                conn, stale_after=self._config.queue.claim_timeout, alive=self.worker
            )
            paths = await store.cleanup(conn, self._config.queue.cleanup_after)
        if paths:
            await asyncio.to_thread(self._spool.remove, paths)
        return released, len(paths)
