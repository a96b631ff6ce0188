"""Operator endpoints: the outbound queue (admin) and DKIM signing keys (admin, or the domain's owner).

A queue entry being sent right now (`sending`) is left alone: retrying or deleting it answers 409,
as `whymailctl queue` does. DKIM private keys never leave the server; a new key is answered with the
DNS TXT record to publish, and activating a key retires the active one of the same algorithm.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import asyncpg

from whymail.api.errors import ApiError, conflict, not_found
from whymail.api.models_ops import (
    SELECTOR_PATTERN,
    DkimKeyIn,
    DkimKeyOut,
    QueueEntryOut,
    QueuePage,
    QueueQuery,
)
from whymail.api.routes import api
from whymail.api.routes.common import ADMIN, MANAGERS, audit
from whymail.api.spec import Req
from whymail.db import dkim_keys
from whymail.directory import records
from whymail.mailauth.dkim import dns_txt_record, generate_key
from whymail.queue import store

# --- outbound queue ------------------------------------------------------------------------------

def _entry_out(entry: store.QueueEntry) -> QueueEntryOut:
    return QueueEntryOut.model_validate(entry.model_dump())


async def _queue_entry(conn: asyncpg.Connection, entry_id: int) -> store.QueueEntry:
    entries = await store.list_entries(conn, ids=[entry_id], limit=1)
    if not entries:
        raise not_found("queue entry")
    return entries[0]


@api.route("GET", "/queue", tag="queue", query=QueueQuery, response=QueuePage, roles=ADMIN)
async def list_queue(req: Req) -> QueuePage:
    """Outbound queue entries, oldest first, with the number of entries in each state."""
    query: QueueQuery = req.query
    async with req.ctx.pool.acquire() as conn:
        entries = await store.list_entries(conn, statuses=query.statuses(), limit=query.limit)
        counts = await store.counts_by_status(conn)
    return QueuePage(items=[_entry_out(e) for e in entries], counts={s: counts.get(s, 0) for s in store.STATES})


@api.route("POST", "/queue/{entry_id:int}/retry", tag="queue", response=QueueEntryOut, roles=ADMIN,
           errors=(404, 409))
async def retry_queue_entry(req: Req) -> QueueEntryOut:
    """Send a waiting, failed or dead entry again now with fresh attempts; 409 while sent or being sent."""
    entry_id = req.params["entry_id"]
    async with req.ctx.pool.acquire() as conn:
        done = await store.retry_entries(conn, [entry_id], lifetime=req.ctx.config.queue.max_lifetime)
        entry = await _queue_entry(conn, entry_id)
    if not done:
        raise conflict(f"queue entry {entry_id} is {entry.status}: nothing to retry")
    await audit(req, "queue_retried", "queue_entry", entry_id, recipients=entry.recipients)
    return _entry_out(entry)


@api.route("DELETE", "/queue/{entry_id:int}", tag="queue", status=204, roles=ADMIN, errors=(404, 409))
async def delete_queue_entry(req: Req) -> None:
    """Remove an entry from the queue (its recipients get no bounce); 409 while it is being sent."""
    entry_id = req.params["entry_id"]
    async with req.ctx.pool.acquire() as conn:
        done = await store.delete_entries(conn, [entry_id])
        if not done:
            entry = await _queue_entry(conn, entry_id)
            raise conflict(f"queue entry {entry_id} is {entry.status}: try again when the attempt is over")
    await audit(req, "queue_deleted", "queue_entry", entry_id)


# --- DKIM keys -----------------------------------------------------------------------------------

async def _managed_domain(req: Req, domain_id: int) -> records.DomainRecord:
    """The domain if the caller manages it; 404 otherwise (another owner's domain is not revealed)."""
    async with req.ctx.pool.acquire() as conn:
        domain = await records.domain_by_id(conn, domain_id)
    if domain is None or not req.me().may_manage_domain(domain.id):
        raise not_found("domain")
    return domain


def _key_out(row: dict) -> DkimKeyOut:
    return DkimKeyOut(
        domain=row["domain"], selector=row["selector"], algorithm=row["algorithm"], public_key=row["public_key"],
        dns_record=dns_txt_record(row["selector"], row["domain"], row["algorithm"], row["public_key"]),
        is_active=row["is_active"], created_at=row["created_at"],
    )


async def _key(conn: asyncpg.Connection, domain: str, selector: str) -> DkimKeyOut:
    for row in await dkim_keys.list_keys(conn, domain):
        if row["selector"] == selector:
            return _key_out(row)
    raise not_found("DKIM key")


@api.route("GET", "/domains/{domain_id:int}/dkim", tag="domains", response=[DkimKeyOut], roles=MANAGERS,
           errors=(404,))
async def list_dkim_keys(req: Req) -> list[DkimKeyOut]:
    """The domain's DKIM keys, oldest first, with their DNS records (never the private keys)."""
    domain = await _managed_domain(req, req.params["domain_id"])
    async with req.ctx.pool.acquire() as conn:
        rows = await dkim_keys.list_keys(conn, domain.name)
    return [_key_out(row) for row in rows]


@api.route("POST", "/domains/{domain_id:int}/dkim", tag="domains", body=DkimKeyIn, response=DkimKeyOut,
           status=201, roles=MANAGERS, errors=(404, 409))
async def create_dkim_key(req: Req) -> DkimKeyOut:
    """Generate a signing key and answer the DNS TXT record to publish for it."""
    body: DkimKeyIn = req.body
    domain = await _managed_domain(req, req.params["domain_id"])
    selector = body.selector or f"wm{dt.datetime.now(dt.UTC):%Y%m}"
    # RSA generation takes up to seconds of CPU: not on the event loop.
    private_pem, public_b64 = await asyncio.to_thread(generate_key, body.algorithm, body.bits)
    async with req.ctx.pool.acquire() as conn:
        try:
            await dkim_keys.store_key(conn, domain.name, selector, body.algorithm, private_pem, public_b64,
                                      activate=body.activate)
        except LookupError:  # the domain was deleted meanwhile
            raise not_found("domain") from None
        except ValueError:
            raise conflict(f"selector {selector} already exists for {domain.name}: choose another") from None
        key = await _key(conn, domain.name, selector)
    await audit(req, "dkim_key_created", "domain", domain.id, domain=domain.name, selector=selector,
                 algorithm=body.algorithm, active=key.is_active)
    return key


@api.route("POST", "/domains/{domain_id:int}/dkim/{selector}/activate", tag="domains", response=DkimKeyOut,
           roles=MANAGERS, errors=(404,))
async def activate_dkim_key(req: Req) -> DkimKeyOut:
    """Sign the domain's mail with this key from now on (the active key of its algorithm retires)."""
    domain = await _managed_domain(req, req.params["domain_id"])
    selector = req.params["selector"].lower()
    if not re.match(SELECTOR_PATTERN, selector):
        raise ApiError(400, "bad_request", "selector: one DNS label of letters, digits and '-'")
    async with req.ctx.pool.acquire() as conn:
        try:
            await dkim_keys.activate_key(conn, domain.name, selector)
        except LookupError:
            raise not_found("DKIM key") from None
        key = await _key(conn, domain.name, selector)
    await audit(req, "dkim_key_activated", "domain", domain.id, domain=domain.name, selector=selector,
                 algorithm=key.algorithm)
    return key
