"""The caller's own mail: mailboxes, message lists and bodies, flags, moves, deletes, attachments, sending.

Reads go to PostgreSQL and the Maildir files directly; every change goes through the owning
MailboxShard (`req.ctx.mailbox_op`), the single writer of the user's mailboxes. An id that belongs to
another user answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import re
from pathlib import Path
from urllib.parse import quote

import asyncpg
import orjson
from sanic import HTTPResponse

from whymail.api import mail_queries as q
from whymail.api.errors import ApiError, bad_request, conflict, not_found
from whymail.api.models_mail import (
    AttachmentOut,
    DeleteQuery,
    MailboxIn,
    MailboxOut,
    MessageDetailOut,
    MessageListQuery,
    MessagePage,
    MessagePatch,
    MessageSummaryOut,
    SendIn,
    SendOut,
)
from whymail.api.routes import api
from whymail.api.routes.common import audit
from whymail.api.spec import Req
from whymail.db import mailbox_queries as mq
from whymail.imap.storage import StorageError, StoreMode
from whymail.maildir import find_message
from whymail.mime import view
from whymail.mime.compose import ComposeError, Outgoing, OutgoingAttachment, build_message
from whymail.mime.sanitize import sanitize_html
from whymail.store.mailbox_ops import STARRED, canonical_name

_STORAGE_STATUS = {
    "NONEXISTENT": (404, "not_found"), "TRYCREATE": (404, "not_found"), "ALREADYEXISTS": (409, "conflict"),
    "OVERQUOTA": (507, "over_quota"), "CANNOT": (400, "bad_request"), "USEATTR": (400, "bad_request"),
    "LIMIT": (413, "too_large"),
}
log = logging.getLogger(__name__)
_SYSTEM_FLAGS = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered"}


# --- plumbing ----------------------------------------------------------------------------------------


async def _write(req: Req, operation: str, *args):
    """A mailbox write on the owning shard; its refusals become API errors."""
    try:
        return await req.ctx.mailbox_op(operation, req.me().user_id, *args)
    except Exception as exc:  # Ray wraps the shard's exception; the cause is what was raised there
        cause = getattr(exc, "cause", exc)
        if isinstance(cause, StorageError):
            status, error = _STORAGE_STATUS.get(cause.code, (409, "conflict"))
            raise ApiError(status, error, cause.text) from None
        raise


def _maildir_root(req: Req) -> Path:
    configured = req.ctx.config.storage.maildir_root
    return Path(configured).expanduser() if configured else Path(req.ctx.state_dir) / "maildir"


def _read_file(root: Path, relpath: str) -> bytes | None:
    path = root / relpath
    try:
        return path.read_bytes()
    except FileNotFoundError:
        found = find_message(path.parent.parent, path.name)  # a Maildir tool moved it to cur/
        try:
            return found.read_bytes() if found is not None else None
        except FileNotFoundError:
            return None


async def _raw(req: Req, row: asyncpg.Record) -> bytes:
    data = await asyncio.to_thread(_read_file, _maildir_root(req), row["maildir_path"])
    if data is None:  # expunged between reading the row and the file
        raise not_found("message")
    return data


async def _message_row(req: Req, message_id: int) -> asyncpg.Record:
    async with req.ctx.pool.acquire() as conn:
        row = await q.message_by_id(conn, req.me().user_id, message_id)
    if row is None:
        raise not_found("message")
    return row


async def _mailbox(req: Req, mailbox_id: int) -> mq.MailboxRow:
    async with req.ctx.pool.acquire() as conn:
        mailbox = await mq.mailbox_by_id(conn, req.me().user_id, mailbox_id)
    if mailbox is None:
        raise not_found("mailbox")
    return mailbox


def _mailbox_out(m: mq.MailboxRow) -> MailboxOut:
    return MailboxOut(id=m.id, name=m.name, special_use=m.special_use, subscribed=m.subscribed,
                      total=m.message_count, unread=m.unseen_count, size=m.total_size)


def _summary(row: asyncpg.Record) -> MessageSummaryOut:
    flags = set(row["flags"])
    return MessageSummaryOut(
        id=row["id"], mailbox_id=row["mailbox_id"], uid=row["uid"], subject=row["subject"],
        from_addr=row["from_addr"], to_addrs=row["to_addrs"], cc_addrs=row["cc_addrs"], date=row["sent_date"],
        received_at=row["internal_date"], size=row["size"], seen="\\Seen" in flags, flagged="\\Flagged" in flags,
        answered="\\Answered" in flags, draft="\\Draft" in flags,
        keywords=sorted(f for f in flags if not f.startswith("\\")), has_attachments=row["has_attachments"],
        message_id=row["message_id"], preview=(row["preview"] or "").strip(),
    )


# --- mailboxes ---------------------------------------------------------------------------------------


@api.route("GET", "/mailboxes", tag="mail", response=[MailboxOut])
async def list_mailboxes(req: Req) -> HTTPResponse:
    """The caller's mailboxes with message and unread counts and their special use (RFC 6154)."""
    user_id = req.me().user_id
    cache = req.ctx.mailbox_cache  # see whymail/api/mailbox_cache.py for why it is never stale
    body = cache.get(user_id)
    if body is None:
        generation = await cache.generation(user_id)  # follow the user's events before reading
        async with req.ctx.pool.acquire() as conn:
            mailboxes = await mq.list_mailboxes(conn, user_id)
        body = orjson.dumps([_mailbox_out(m).model_dump(mode="json") for m in mailboxes])
        cache.put(user_id, generation, body)
    return HTTPResponse(body, content_type="application/json")


async def _mailbox_named(req: Req, name: str) -> MailboxOut:
    async with req.ctx.pool.acquire() as conn:
        mailbox = await mq.mailbox_by_name(conn, req.me().user_id, name)
    if mailbox is None:
        raise not_found("mailbox")
    return _mailbox_out(mailbox)


def _canonical(name: str) -> str:
    try:
        return canonical_name(name)
    except StorageError as exc:
        raise bad_request(exc.text) from None


@api.route("POST", "/mailboxes", tag="mail", body=MailboxIn, response=MailboxOut, status=201, errors=(409,))
async def create_mailbox(req: Req) -> MailboxOut:
    """Create a mailbox (and its missing parents; levels are separated by '/')."""
    name = _canonical(req.body.name)
    await _check_free(req, name)
    await _write(req, "create_mailbox", name)
    return await _mailbox_named(req, name)


async def _check_free(req: Req, name: str) -> None:
    """409 when the caller already has a mailbox called `name` (or it is a reserved name)."""
    async with req.ctx.pool.acquire() as conn:
        taken = await mq.mailbox_by_name(conn, req.me().user_id, name)
    if taken is not None or name == "INBOX" or name.lower() == STARRED.lower():
        raise conflict(f"a mailbox called {name} exists already")


def _check_changeable(mailbox: mq.MailboxRow) -> None:
    if mailbox.name == "INBOX" or mailbox.special_use:
        raise conflict(f"{mailbox.name} is a system mailbox and cannot be renamed or deleted")


@api.route("PATCH", "/mailboxes/{mailbox_id:int}", tag="mail", body=MailboxIn, response=MailboxOut,
           errors=(404, 409))
async def rename_mailbox(req: Req) -> MailboxOut:
    """Rename a mailbox (its children move along)."""
    mailbox = await _mailbox(req, req.params["mailbox_id"])
    _check_changeable(mailbox)
    new = _canonical(req.body.name)
    if new != mailbox.name:
        if new.startswith(mailbox.name + "/"):
            raise bad_request("a mailbox cannot move into its own child")
        await _check_free(req, new)
        await _write(req, "rename_mailbox", mailbox.name, new)
    return await _mailbox_named(req, new)


@api.route("DELETE", "/mailboxes/{mailbox_id:int}", tag="mail", errors=(404, 409))
async def delete_mailbox(req: Req) -> None:
    """Delete a mailbox and the messages in it (child mailboxes stay)."""
    mailbox = await _mailbox(req, req.params["mailbox_id"])
    _check_changeable(mailbox)
    await _write(req, "delete_mailbox", mailbox.name)


# --- message lists -----------------------------------------------------------------------------------


def _encode_cursor(sort: str, row: asyncpg.Record) -> str:
    payload = orjson.dumps({"s": sort, "d": row["internal_date"].isoformat(), "i": row["id"]})
    return base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> q.PageKey:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = q.PageKey(dt.datetime.fromisoformat(payload["d"]), int(payload["i"]))
        same_sort = payload["s"] == sort
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise ApiError(400, "invalid_query", "query: cursor: not a cursor this API gave out") from None
    if not same_sort:
        raise ApiError(400, "invalid_query", "query: cursor: it belongs to another sort order")
    return key


@api.route("GET", "/mailboxes/{mailbox_id:int}/messages", tag="mail", query=MessageListQuery,
           response=MessagePage, errors=(404,))
async def list_messages(req: Req) -> HTTPResponse:
    """A page of the mailbox's messages, newest first by default; pass `next_cursor` back for the next."""
    query: MessageListQuery = req.query
    after = _decode_cursor(query.cursor, query.sort) if query.cursor else None
    filters = q.MessageFilter(
        unread=query.unread, flagged=query.flagged, has_attachment=query.has_attachment,
        from_contains=query.sender, subject_contains=query.subject, since=query.since, until=query.until,
    )
    async with req.ctx.pool.acquire() as conn:
        rows = await q.list_messages(
            conn, req.me().user_id, req.params["mailbox_id"], filters,
            descending=query.sort == "date_desc", after=after, limit=query.limit + 1,
        )
    if rows is None:
        raise not_found("mailbox")
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = _encode_cursor(query.sort, rows[-1]) if more else None
    return HTTPResponse(page_json(rows, cursor), content_type="application/json")


_FLAG_FIELDS = (("seen", "\\Seen"), ("flagged", "\\Flagged"), ("answered", "\\Answered"), ("draft", "\\Draft"))


def page_json(rows: list[asyncpg.Record], next_cursor: str | None) -> bytes:
    """A `MessagePage` as JSON, straight from the rows: the same bytes as `_summary` models dumped by
    pydantic (tests/unit/test_api_page_json.py checks it), at a fraction of the CPU of 50 models."""
    messages = []
    for row in rows:
        flags = row["flags"]
        item = {
            "id": row["id"], "mailbox_id": row["mailbox_id"], "uid": row["uid"], "subject": row["subject"],
            "from_addr": row["from_addr"], "to_addrs": row["to_addrs"], "cc_addrs": row["cc_addrs"],
            "date": row["sent_date"], "received_at": row["internal_date"], "size": row["size"],
        }
        for name, flag in _FLAG_FIELDS:
            item[name] = flag in flags
        item["keywords"] = sorted(f for f in flags if not f.startswith("\\"))
        item["has_attachments"] = row["has_attachments"]
        item["message_id"] = row["message_id"]
        item["preview"] = (row["preview"] or "").strip()
        messages.append(item)
    # pydantic writes a UTC datetime with "Z"; orjson's OPT_UTC_Z does the same.
    return orjson.dumps({"messages": messages, "next_cursor": next_cursor}, option=orjson.OPT_UTC_Z)


# --- one message -------------------------------------------------------------------------------------


def _attachment_url(message_id: int, part: str) -> str:
    return f"/api/v1/messages/{message_id}/attachments/{part}"


@api.route("GET", "/messages/{message_id:int}", tag="mail", response=MessageDetailOut, errors=(404,))
async def get_message(req: Req) -> MessageDetailOut:
    """Headers, the text body, the HTML body (sanitized), the attachments and the thread of a message."""
    row = await _message_row(req, req.params["message_id"])
    raw = await _raw(req, row)
    shown = await asyncio.to_thread(view.message_view, raw) if len(raw) > 256 * 1024 else view.message_view(raw)
    cids = {a.content_id: _attachment_url(row["id"], a.part) for a in shown.attachments if a.content_id}
    html = sanitize_html(shown.html, cids) if shown.html is not None else None
    related = [*shown.references, *([row["in_reply_to"]] if row["in_reply_to"] else [])]
    async with req.ctx.pool.acquire() as conn:
        thread = await q.thread_of(
            conn, req.me().user_id, row["id"], row["thread_id"] or "", row["message_id"] or "", related
        )
    summary = _summary(row)
    return MessageDetailOut(
        **summary.model_dump(), mailbox_name=row["mailbox_name"], reply_to=list(shown.reply_to),
        in_reply_to=row["in_reply_to"], references=list(shown.references), text=shown.text,
        html=html.html if html else None, remote_content_blocked=html.blocked_remote if html else 0,
        attachments=[
            AttachmentOut(part=a.part, filename=a.filename, content_type=a.content_type, size=a.size,
                          content_id=a.content_id, inline=a.inline, url=_attachment_url(row["id"], a.part))
            for a in shown.attachments
        ],
        thread=[_summary(r) for r in thread],
    )


def _content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the UTF-8 one (RFC 6266 §4.3, RFC 8187)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename).strip() or "attachment"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@api.route("GET", "/messages/{message_id:int}/attachments/{part}", tag="mail", errors=(404,), download=True)
async def get_attachment(req: Req) -> HTTPResponse:
    """One part of a message, transfer encoding undone, as a download."""
    row = await _message_row(req, req.params["message_id"])
    raw = await _raw(req, row)
    part = view.find_leaf(raw, req.params["part"])
    if part is None:
        raise not_found("part")
    data = view.part_bytes(raw, part)
    kind = view.content_type(part)
    charset = view.part_charset(part)
    filename = view.part_filename(part) or f"part-{req.params['part']}"
    return HTTPResponse(
        data, status=200, content_type=f"{kind}; charset={charset}" if charset and kind.startswith("text/") else kind,
        headers={
            "Content-Disposition": _content_disposition(filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


# --- changing messages -------------------------------------------------------------------------------


async def _store(req: Req, row: asyncpg.Record, mode: StoreMode, flags: set[str]) -> None:
    if flags:
        await _write(req, "store_flags", row["mailbox_id"], [row["uid"]], mode, frozenset(flags))


async def _move(req: Req, row: asyncpg.Record, dest_name: str, dest_id: int) -> asyncpg.Record:
    result = await _write(req, "move", row["mailbox_id"], [row["uid"]], dest_name)
    if not result.dest_uids:
        raise not_found("message")  # gone meanwhile
    async with req.ctx.pool.acquire() as conn:
        moved = await q.message_by_uid(conn, req.me().user_id, dest_id, result.dest_uids[0])
    if moved is None:
        raise not_found("message")
    return moved


@api.route("PATCH", "/messages/{message_id:int}", tag="mail", body=MessagePatch, response=MessageSummaryOut,
           errors=(404,))
async def update_message(req: Req) -> MessageSummaryOut:
    """Set or clear \\Seen, \\Flagged, \\Answered, replace the keywords, and/or move the message.
    A moved message gets a new id (it is a new row in the target mailbox): use the one returned."""
    body: MessagePatch = req.body
    row = await _message_row(req, req.params["message_id"])
    target = await _mailbox(req, body.mailbox_id) if body.mailbox_id is not None else None
    current = set(row["flags"])
    add, remove = set(), set()
    for name, flag in _SYSTEM_FLAGS.items():
        wanted = getattr(body, name)
        if wanted is not None:
            (add if wanted else remove).add(flag)
    if body.keywords is not None:
        keywords = {f for f in current if not f.startswith("\\")}
        add |= set(body.keywords) - keywords
        remove |= keywords - set(body.keywords)
    await _store(req, row, StoreMode.ADD, add - current)
    await _store(req, row, StoreMode.REMOVE, remove & current)
    if target is not None and target.id != row["mailbox_id"]:
        return _summary(await _move(req, row, target.name, target.id))
    return _summary(await _message_row(req, row["id"]))


@api.route("DELETE", "/messages/{message_id:int}", tag="mail", query=DeleteQuery, errors=(404,))
async def delete_message(req: Req) -> None:
    """Move the message to Trash; remove it for good when it is in Trash already or `permanent=true`."""
    row = await _message_row(req, req.params["message_id"])
    if req.query.permanent or row["special_use"] == "\\Trash":
        await _store(req, row, StoreMode.ADD, {"\\Deleted"})
        await _write(req, "expunge", row["mailbox_id"], [row["uid"]])
        return
    trash_id, trash_name = await _special_mailbox(req, "\\Trash", "Trash")
    await _move(req, row, trash_name, trash_id)


async def _special_mailbox(req: Req, special_use: str, default_name: str) -> tuple[int, str]:
    """(id, name) of the caller's mailbox with this special use, created under `default_name` if missing."""
    user_id = req.me().user_id
    async with req.ctx.pool.acquire() as conn:
        found = await q.mailbox_by_special_use(conn, user_id, special_use)
    if found is not None:
        return found["id"], found["name"]
    try:
        await _write(req, "create_mailbox", default_name, special_use)
    except ApiError as exc:
        if exc.status != 409:  # 409: it exists without the attribute (or was created meanwhile)
            raise
    async with req.ctx.pool.acquire() as conn:
        mailbox = await mq.mailbox_by_name(conn, user_id, default_name)
    if mailbox is None:
        raise conflict(f"there is no {default_name} mailbox")
    return mailbox.id, mailbox.name


# --- sending -----------------------------------------------------------------------------------------


def _attachments(req: Req, limit: int) -> tuple[OutgoingAttachment, ...]:
    out: list[OutgoingAttachment] = []
    total = 0
    for index, attachment in enumerate(req.body.attachments):
        if len(attachment.content_base64) > limit * 4 // 3 + 4:
            raise ApiError(413, "too_large", f"the message is larger than {limit} bytes")
        try:
            data = base64.b64decode(attachment.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_body", f"body: attachments.{index}.content_base64: not base64") from None
        total += len(data)
        if total > limit:
            raise ApiError(413, "too_large", f"the message is larger than {limit} bytes")
        out.append(OutgoingAttachment(attachment.filename, attachment.content_type, data))
    return tuple(out)


@api.route("POST", "/send", tag="mail", body=SendIn, response=SendOut, status=202, errors=(413, 422))
async def send_message(req: Req) -> SendOut:
    """Compose and queue a message from the caller's address; a copy goes to the caller's Sent mailbox."""
    body: SendIn = req.body
    caller = req.me()
    limit = req.ctx.config.server.smtp.max_message_size
    if body.from_name is None:
        async with req.ctx.pool.acquire() as conn:
            from_name = await q.display_name(conn, caller.user_id)
    else:
        from_name = body.from_name
    try:
        built = build_message(Outgoing(
            from_addr=caller.email, from_name=from_name, to=tuple(body.to), cc=tuple(body.cc),
            bcc=tuple(body.bcc), subject=body.subject, text=body.text, html=body.html,
            attachments=_attachments(req, limit), in_reply_to=body.in_reply_to, references=tuple(body.references),
        ))
    except ComposeError as exc:
        raise bad_request(str(exc)) from None
    if len(built.data) > limit:
        raise ApiError(413, "too_large", f"the message is larger than {limit} bytes")
    delivery_id, signed = await req.ctx.queue_message(built.data, caller.email, built.recipients, caller.user_id)
    await audit(req, "message_sent", "delivery", delivery_id, via="api", message_id=built.message_id,
                recipients=len(built.recipients), size=len(signed))
    # Queued first, as SMTP submission does: a failed Sent copy must not undo (or repeat) the delivery.
    try:
        _, sent_name = await _special_mailbox(req, "\\Sent", "Sent")
        await _write(req, "append", sent_name, signed, frozenset({"\\Seen"}), None)
    except ApiError as exc:
        log.warning("no Sent copy of delivery %s for user %d: %s", delivery_id, caller.user_id, exc.message)
    return SendOut(delivery_id=str(delivery_id), message_id=built.message_id)
