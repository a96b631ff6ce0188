"""Drafts, uploaded attachments, signatures and read receipts of the caller.

Uploads are files under `<maildir_root>/.uploads/` with a row in `attachments` (no message, maybe a
draft). A draft is sent through `mail.send_message`, so it is composed, scanned, signed and queued
exactly like `POST /send`. Another user's id answers 404, like one that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import asyncpg
from pydantic import ValidationError
from sanic import HTTPResponse

from whymail.api import extra_queries as xq
from whymail.api import uploads
from whymail.api.errors import ApiError, bad_request, conflict, not_found
from whymail.api.mdn import build_mdn, receipt_request
from whymail.api.models_extra import (
    DraftIn,
    DraftOut,
    DraftSentOut,
    ReadReceiptIn,
    ReadReceiptOut,
    ReadReceiptQuery,
    SignatureIn,
    SignatureOut,
    UploadOut,
)
from whymail.api.models_mail import AttachmentIn, SendIn
from whymail.api.routes import api
from whymail.api.routes.mail import _content_disposition, _maildir_root, _message_row, _raw, send_message
from whymail.api.spec import Req, validation_message

log = logging.getLogger(__name__)


# --- uploaded attachments ----------------------------------------------------------------------------


def _upload_out(row: asyncpg.Record) -> UploadOut:
    return UploadOut(id=row["id"], filename=row["filename"], content_type=row["content_type"], size=row["size"],
                     draft_id=row["draft_id"], created_at=row["created_at"], url=f"/api/v1/attachments/{row['id']}")


async def _upload_row(req: Req, upload_id: int) -> asyncpg.Record:
    async with req.ctx.pool.acquire() as conn:
        row = await xq.upload_by_id(conn, req.me().user_id, upload_id)
    if row is None:
        raise not_found("attachment")
    return row


@api.route("POST", "/attachments", tag="mail", response=UploadOut, status=201, errors=(413,), upload=True,
           summary="Upload an attachment for a draft. Body: multipart/form-data with one file field named "
                   "`file` (its filename and Content-Type are kept); at most server.smtp.max_message_size bytes.")
async def upload_attachment(req: Req) -> UploadOut:
    request = req.request
    if not (request.content_type or "").lower().startswith("multipart/form-data"):
        raise bad_request("send multipart/form-data with a file field named `file`")
    files = request.files.getlist("file") if request.files else None
    if not files:
        raise bad_request("body: file: missing (multipart/form-data with a file field named `file`)")
    if len(files) > 1:
        raise bad_request("body: file: one file per upload")
    upload = files[0]
    limit = req.ctx.config.server.smtp.max_message_size
    if len(upload.body) > limit:
        raise ApiError(413, "too_large", f"the file is larger than {limit} bytes")
    root = _maildir_root(req)
    path = await uploads.store(root, upload.body, fsync=req.ctx.config.storage.fsync)
    try:
        async with req.ctx.pool.acquire() as conn:
            row = await xq.insert_upload(conn, req.me().user_id, uploads.clean_filename(upload.name),
                                         uploads.clean_content_type(upload.type), len(upload.body), path)
    except BaseException:
        await uploads.remove(root, [path])
        raise
    return _upload_out(row)


@api.route("GET", "/attachments/{attachment_id:int}", tag="mail", errors=(404,), download=True)
async def download_attachment(req: Req) -> HTTPResponse:
    """An uploaded attachment as a download, with the Content-Type it was uploaded with."""
    row = await _upload_row(req, req.params["attachment_id"])
    opened = await uploads.open_upload(_maildir_root(req), row["storage_path"])
    if opened is None:
        log.warning("upload %d of user %d has no file", row["id"], row["user_id"])
        raise not_found("attachment")
    handle, size = opened
    return uploads.FileDownload(handle, size, content_type=row["content_type"], headers={
        "Content-Disposition": _content_disposition(row["filename"]),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


@api.route("DELETE", "/attachments/{attachment_id:int}", tag="mail", errors=(404,))
async def delete_attachment(req: Req) -> None:
    """Delete an uploaded attachment (it leaves the draft it was attached to)."""
    async with req.ctx.pool.acquire() as conn:
        row = await xq.delete_upload(conn, req.me().user_id, req.params["attachment_id"])
    if row is None:
        raise not_found("attachment")
    await uploads.remove(_maildir_root(req), [row["storage_path"]])


# --- drafts ------------------------------------------------------------------------------------------


def _draft_out(row: asyncpg.Record, attached: list[asyncpg.Record]) -> DraftOut:
    return DraftOut(
        id=row["id"], to=list(row["to_addrs"]), cc=list(row["cc_addrs"]), bcc=list(row["bcc_addrs"]),
        subject=row["subject"], text=row["body_text"], html=row["body_html"] or None,
        attachments=[_upload_out(a) for a in attached], in_reply_to=row["in_reply_to"],
        references=(row["references_hdr"] or "").split(), created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _in_draft_order(row: asyncpg.Record, attached: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """The draft's uploads in the order of its snapshot (the order the client gave)."""
    order = {entry["id"]: n for n, entry in enumerate(xq.snapshot(row["attachments"]))}
    return sorted(attached, key=lambda a: (order.get(a["id"], len(order)), a["id"]))


async def _draft(conn: asyncpg.Connection, user_id: int, draft_id: int) -> DraftOut:
    row = await xq.draft_by_id(conn, user_id, draft_id)
    if row is None:
        raise not_found("draft")
    attached = await xq.uploads_of_drafts(conn, user_id, [draft_id])
    return _draft_out(row, _in_draft_order(row, attached))


async def _attach(conn: asyncpg.Connection, user_id: int, draft_id: int, upload_ids: list[int]) -> None:
    try:
        await xq.attach_uploads(conn, user_id, draft_id, upload_ids)
    except xq.AttachError as exc:
        if exc.missing:
            raise not_found(f"attachment {exc.upload_id}") from None
        raise conflict(f"attachment {exc.upload_id} belongs to another draft") from None


@api.route("GET", "/drafts", tag="mail", response=[DraftOut])
async def list_drafts(req: Req) -> list[DraftOut]:
    """The caller's drafts, most recently changed first."""
    user_id = req.me().user_id
    async with req.ctx.pool.acquire() as conn:
        rows = await xq.list_drafts(conn, user_id)
        attached = await xq.uploads_of_drafts(conn, user_id, [r["id"] for r in rows])
    by_draft: dict[int, list[asyncpg.Record]] = {}
    for upload in attached:
        by_draft.setdefault(upload["draft_id"], []).append(upload)
    return [_draft_out(r, _in_draft_order(r, by_draft.get(r["id"], []))) for r in rows]


@api.route("POST", "/drafts", tag="mail", body=DraftIn, response=DraftOut, status=201, errors=(404, 409))
async def create_draft(req: Req) -> DraftOut:
    """Save a new draft; `attachment_ids` are uploads from POST /attachments not in another draft."""
    user_id = req.me().user_id
    async with req.ctx.pool.acquire() as conn:
        async with conn.transaction():
            draft_id = await xq.insert_draft(conn, user_id, req.body)
            await _attach(conn, user_id, draft_id, req.body.attachment_ids)
        return await _draft(conn, user_id, draft_id)


@api.route("GET", "/drafts/{draft_id:int}", tag="mail", response=DraftOut, errors=(404,))
async def get_draft(req: Req) -> DraftOut:
    """One draft with its attachments."""
    async with req.ctx.pool.acquire() as conn:
        return await _draft(conn, req.me().user_id, req.params["draft_id"])


@api.route("PUT", "/drafts/{draft_id:int}", tag="mail", body=DraftIn, response=DraftOut, errors=(404, 409))
async def replace_draft(req: Req) -> DraftOut:
    """Replace every field of a draft; uploads left out of `attachment_ids` stay as unattached uploads."""
    user_id, draft_id = req.me().user_id, req.params["draft_id"]
    async with req.ctx.pool.acquire() as conn:
        async with conn.transaction():
            if await xq.draft_by_id(conn, user_id, draft_id, for_update=True) is None:
                raise not_found("draft")
            await xq.update_draft(conn, user_id, draft_id, req.body)
            await _attach(conn, user_id, draft_id, req.body.attachment_ids)
        return await _draft(conn, user_id, draft_id)


@api.route("DELETE", "/drafts/{draft_id:int}", tag="mail", errors=(404,))
async def delete_draft(req: Req) -> None:
    """Delete a draft and its attachments."""
    async with req.ctx.pool.acquire() as conn:
        paths = await xq.delete_draft(conn, req.me().user_id, req.params["draft_id"])
    if paths is None:
        raise not_found("draft")
    await uploads.remove(_maildir_root(req), paths)


async def _send_body(req: Req, row: asyncpg.Record, attached: list[asyncpg.Record]) -> SendIn:
    """The draft as the body of POST /send, its uploads read back from disk."""
    root = _maildir_root(req)
    files: list[AttachmentIn] = []
    for upload in attached:
        data = await uploads.read(root, upload["storage_path"])
        if data is None:
            log.warning("upload %d of draft %d has no file", upload["id"], row["id"])
            raise conflict(f"the file of attachment {upload['id']} is gone; remove it from the draft")
        files.append(AttachmentIn(filename=upload["filename"], content_type=upload["content_type"],
                                  content_base64=base64.b64encode(data).decode("ascii")))
    try:
        return SendIn(
            to=list(row["to_addrs"]), cc=list(row["cc_addrs"]), bcc=list(row["bcc_addrs"]), subject=row["subject"],
            text=row["body_text"], html=row["body_html"] or None, attachments=files, in_reply_to=row["in_reply_to"],
            references=(row["references_hdr"] or "").split(),
        )
    except ValidationError as exc:
        raise ApiError(400, "invalid_draft", validation_message(exc, "draft")) from None


_SEND_SLOTS: list[asyncio.Semaphore] = []  # one per process, made on first use (inside the event loop)


def _send_slots(pool_size: int) -> asyncio.Semaphore:
    """Handlers that queue mail while holding a locked row take at most half the pool, so the
    connections queueing needs are always there (no deadlock when many send at once)."""
    if not _SEND_SLOTS:
        _SEND_SLOTS.append(asyncio.Semaphore(max(1, pool_size // 2)))
    return _SEND_SLOTS[0]


@api.route("POST", "/drafts/{draft_id:int}/send", tag="mail", response=DraftSentOut, status=202,
           errors=(404, 409, 413, 422))
async def send_draft(req: Req) -> DraftSentOut:
    """Send a draft exactly as POST /send would (a copy goes to Sent), then delete it and its uploads."""
    user_id, draft_id = req.me().user_id, req.params["draft_id"]
    # The row stays locked until the draft is gone: a second send of it waits, then finds nothing.
    async with _send_slots(req.ctx.config.db.max_pool), req.ctx.pool.acquire() as conn, conn.transaction():
        row = await xq.draft_by_id(conn, user_id, draft_id, for_update=True)
        if row is None:
            raise not_found("draft")
        attached = _in_draft_order(row, await xq.uploads_of_drafts(conn, user_id, [draft_id]))
        body = await _send_body(req, row, attached)
        sent = await send_message(Req(req.request, req.caller, body=body, params=req.params))
        paths = await xq.delete_draft(conn, user_id, draft_id) or []
    await uploads.remove(_maildir_root(req), paths)
    return DraftSentOut(delivery_id=sent.delivery_id, message_id=sent.message_id)


# --- signatures --------------------------------------------------------------------------------------


def _signature_out(row: asyncpg.Record) -> SignatureOut:
    return SignatureOut(id=row["id"], name=row["name"], text=row["body_text"], html=row["body_html"],
                        is_default=row["is_default"], created_at=row["created_at"], updated_at=row["updated_at"])


async def _signature(conn: asyncpg.Connection, user_id: int, signature_id: int) -> SignatureOut:
    row = await xq.signature_by_id(conn, user_id, signature_id)
    if row is None:
        raise not_found("signature")
    return _signature_out(row)


@api.route("GET", "/signatures", tag="mail", response=[SignatureOut])
async def list_signatures(req: Req) -> list[SignatureOut]:
    """The caller's signatures by name; at most one is the default."""
    async with req.ctx.pool.acquire() as conn:
        return [_signature_out(r) for r in await xq.list_signatures(conn, req.me().user_id)]


@api.route("POST", "/signatures", tag="mail", body=SignatureIn, response=SignatureOut, status=201, errors=(409,))
async def create_signature(req: Req) -> SignatureOut:
    """Add a signature (names are unique per user)."""
    body: SignatureIn = req.body
    user_id = req.me().user_id
    async with req.ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():
                if body.is_default:
                    await xq.clear_default_signature(conn, user_id)
                signature_id = await xq.insert_signature(conn, user_id, body.name, body.text, body.html,
                                                         body.is_default)
        except asyncpg.UniqueViolationError:
            raise conflict(f"you have a signature called {body.name} already") from None
        return await _signature(conn, user_id, signature_id)


@api.route("PUT", "/signatures/{signature_id:int}", tag="mail", body=SignatureIn, response=SignatureOut,
           errors=(404, 409))
async def replace_signature(req: Req) -> SignatureOut:
    """Replace a signature's name, text, HTML and default mark."""
    body: SignatureIn = req.body
    user_id, signature_id = req.me().user_id, req.params["signature_id"]
    async with req.ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await _signature(conn, user_id, signature_id)
                if body.is_default:
                    await xq.clear_default_signature(conn, user_id)
                await xq.update_signature(conn, user_id, signature_id, body.name, body.text, body.html,
                                          body.is_default)
        except asyncpg.UniqueViolationError:
            raise conflict(f"you have a signature called {body.name} already") from None
        return await _signature(conn, user_id, signature_id)


@api.route("DELETE", "/signatures/{signature_id:int}", tag="mail", errors=(404,))
async def delete_signature(req: Req) -> None:
    """Delete a signature."""
    async with req.ctx.pool.acquire() as conn:
        if not await xq.delete_signature(conn, req.me().user_id, req.params["signature_id"]):
            raise not_found("signature")


@api.route("POST", "/signatures/{signature_id:int}/default", tag="mail", response=SignatureOut, errors=(404,))
async def make_default_signature(req: Req) -> SignatureOut:
    """Make this signature the default one (the previous default stops being one)."""
    user_id, signature_id = req.me().user_id, req.params["signature_id"]
    async with req.ctx.pool.acquire() as conn:
        if not await xq.set_default_signature(conn, user_id, signature_id):
            raise not_found("signature")
        return await _signature(conn, user_id, signature_id)


# --- read receipts -----------------------------------------------------------------------------------


def _receipt_out(row: asyncpg.Record) -> ReadReceiptOut:
    return ReadReceiptOut(id=row["id"], message_id=row["message_id"], requested_by=row["requested_by"],
                          status=row["status"], sent_at=row["sent_at"], created_at=row["created_at"])


@api.route("GET", "/read-receipts", tag="mail", query=ReadReceiptQuery, response=[ReadReceiptOut])
async def list_read_receipts(req: Req) -> list[ReadReceiptOut]:
    """The read receipts (MDNs) asked of the caller by messages they received, newest first."""
    async with req.ctx.pool.acquire() as conn:
        rows = await xq.list_receipts(conn, req.me().user_id, req.query.status)
    return [_receipt_out(r) for r in rows]


@api.route("POST", "/messages/{message_id:int}/read-receipt", tag="mail", body=ReadReceiptIn,
           response=ReadReceiptOut, errors=(404, 409))
async def answer_read_receipt(req: Req) -> ReadReceiptOut:
    """Send the read receipt a received message asks for (Disposition-Notification-To), or decline it.
    A message gets at most one answer (RFC 8098 §2.1); a second one is 409."""
    caller = req.me()
    message = await _message_row(req, req.params["message_id"])
    wanted = receipt_request(await _raw(req, message))
    if not wanted.notify:
        raise conflict("the message does not ask for a read receipt")
    async with _send_slots(req.ctx.config.db.max_pool), req.ctx.pool.acquire() as conn, conn.transaction():
        await xq.claim_receipt(conn, caller.user_id, message["id"], ", ".join(wanted.notify))
        existing = await xq.receipt_for_update(conn, message["id"])
        if existing["status"] in ("sent", "ignored"):
            raise conflict(f"the read receipt was {existing['status']} already")
        if req.body.action == "ignore":
            return _receipt_out(await xq.finish_receipt(conn, message["id"], "ignored"))
        mdn = build_mdn(wanted, reader=caller.email, reporting_host=req.ctx.config.server.hostname)
        # RFC 8098 §3: a null return path, so the receipt itself never draws a bounce or another receipt.
        await req.ctx.queue_message(mdn, "", list(wanted.notify), caller.user_id)
        return _receipt_out(await xq.finish_receipt(conn, message["id"], "sent"))
