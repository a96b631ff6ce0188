"""SQL of drafts, uploaded attachments, signatures and read receipts. Every query is scoped by the
caller's `user_id`, so another user's id finds nothing (the routes answer 404)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from whymail.api.models_extra import DraftIn

UPLOAD_COLUMNS = "id, user_id, draft_id, filename, content_type, size, storage_path, created_at"
DRAFT_COLUMNS = """id, subject, body_text, body_html, to_addrs, cc_addrs, bcc_addrs, in_reply_to, references_hdr,
    attachments, created_at, updated_at"""
SIGNATURE_COLUMNS = "id, name, body_text, body_html, is_default, created_at, updated_at"
RECEIPT_COLUMNS = "id, message_id, requested_by, status, sent_at, created_at"


# --- uploads (attachments rows not tied to a stored message) -----------------------------------------


async def insert_upload(
    conn: asyncpg.Connection, user_id: int, filename: str, content_type: str, size: int, storage_path: str
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO attachments (user_id, filename, content_type, size, storage_path)
            VALUES ($1, $2, $3, $4, $5) RETURNING {UPLOAD_COLUMNS}""",
        user_id, filename, content_type, size, storage_path,
    )


async def upload_by_id(conn: asyncpg.Connection, user_id: int, upload_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {UPLOAD_COLUMNS} FROM attachments WHERE id = $1 AND user_id = $2 AND message_id IS NULL",
        upload_id, user_id,
    )


async def uploads_of_drafts(conn: asyncpg.Connection, user_id: int, draft_ids: Sequence[int]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {UPLOAD_COLUMNS} FROM attachments WHERE user_id = $1 AND draft_id = ANY($2::bigint[]) ORDER BY id",
        user_id, list(draft_ids),
    )


async def delete_upload(conn: asyncpg.Connection, user_id: int, upload_id: int) -> asyncpg.Record | None:
    """Remove the row (and its entry in its draft's snapshot); returns it so the file can go too."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"DELETE FROM attachments WHERE id = $1 AND user_id = $2 AND message_id IS NULL RETURNING {UPLOAD_COLUMNS}",
            upload_id, user_id,
        )
        if row is not None and row["draft_id"] is not None:
            await conn.execute(
                """UPDATE drafts SET attachments = (
                       SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb)
                         FROM jsonb_array_elements(attachments) WITH ORDINALITY AS a(e, n)
                        WHERE (e->>'id')::bigint <> $2), updated_at = now()
                    WHERE id = $1""",
                row["draft_id"], upload_id,
            )
    return row


# --- drafts ------------------------------------------------------------------------------------------


def snapshot(value: str | list | None) -> list[dict]:
    """The draft's `attachments` JSONB ([{id, filename, size}]); asyncpg hands JSONB over as text."""
    entries = orjson.loads(value) if isinstance(value, str) else (value or [])
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), int)]


async def list_drafts(conn: asyncpg.Connection, user_id: int, limit: int = 500) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {DRAFT_COLUMNS} FROM drafts WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2",
        user_id, limit,
    )


async def draft_by_id(
    conn: asyncpg.Connection, user_id: int, draft_id: int, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {DRAFT_COLUMNS} FROM drafts WHERE id = $1 AND user_id = $2{lock}", draft_id, user_id
    )


def _draft_values(draft: DraftIn) -> tuple:
    return (
        draft.subject, draft.text, draft.html or "", draft.to, draft.cc, draft.bcc, draft.in_reply_to,
        " ".join(draft.references) or None,
    )


async def insert_draft(conn: asyncpg.Connection, user_id: int, draft: DraftIn) -> int:
    return await conn.fetchval(
        """INSERT INTO drafts (user_id, subject, body_text, body_html, to_addrs, cc_addrs, bcc_addrs, in_reply_to,
                               references_hdr)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
        user_id, *_draft_values(draft),
    )


async def update_draft(conn: asyncpg.Connection, user_id: int, draft_id: int, draft: DraftIn) -> None:
    await conn.execute(
        """UPDATE drafts SET subject = $3, body_text = $4, body_html = $5, to_addrs = $6, cc_addrs = $7,
                             bcc_addrs = $8, in_reply_to = $9, references_hdr = $10, updated_at = now()
            WHERE id = $1 AND user_id = $2""",
        draft_id, user_id, *_draft_values(draft),
    )


class AttachError(Exception):
    """An attachment id the caller cannot attach: `missing` (not theirs / no such), or in another draft."""

    def __init__(self, upload_id: int, missing: bool) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id
        self.missing = missing


async def attach_uploads(conn: asyncpg.Connection, user_id: int, draft_id: int, upload_ids: list[int]) -> None:
    """Make `upload_ids` (in this order) the draft's attachments; the ones dropped become plain uploads
    again. Call inside a transaction. Raises AttachError."""
    rows = await conn.fetch(
        """SELECT id, draft_id, filename, size FROM attachments
            WHERE user_id = $1 AND message_id IS NULL AND id = ANY($2::bigint[]) FOR UPDATE""",
        user_id, upload_ids,
    )
    by_id = {r["id"]: r for r in rows}
    for upload_id in upload_ids:
        row = by_id.get(upload_id)
        if row is None:
            raise AttachError(upload_id, missing=True)
        if row["draft_id"] is not None and row["draft_id"] != draft_id:
            raise AttachError(upload_id, missing=False)
    await conn.execute(
        "UPDATE attachments SET draft_id = NULL WHERE user_id = $1 AND draft_id = $2 AND id <> ALL($3::bigint[])",
        user_id, draft_id, upload_ids,
    )
    await conn.execute(
        "UPDATE attachments SET draft_id = $2 WHERE user_id = $1 AND id = ANY($3::bigint[])",
        user_id, draft_id, upload_ids,
    )
    snapshot = [{"id": i, "filename": by_id[i]["filename"], "size": by_id[i]["size"]} for i in upload_ids]
    await conn.execute(
        "UPDATE drafts SET attachments = $2::jsonb WHERE id = $1", draft_id, orjson.dumps(snapshot).decode()
    )


async def delete_draft(conn: asyncpg.Connection, user_id: int, draft_id: int) -> list[str] | None:
    """Delete the draft and its attachments; the storage paths of their files, or None if there was no draft."""
    async with conn.transaction():
        paths = await conn.fetch(
            "SELECT storage_path FROM attachments WHERE user_id = $1 AND draft_id = $2", user_id, draft_id
        )
        deleted = await conn.fetchval("DELETE FROM drafts WHERE id = $1 AND user_id = $2 RETURNING id", draft_id, user_id)
    return [r["storage_path"] for r in paths] if deleted is not None else None


# --- signatures --------------------------------------------------------------------------------------


async def list_signatures(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {SIGNATURE_COLUMNS} FROM signatures WHERE user_id = $1 ORDER BY name, id", user_id)


async def signature_by_id(conn: asyncpg.Connection, user_id: int, signature_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SIGNATURE_COLUMNS} FROM signatures WHERE id = $1 AND user_id = $2", signature_id, user_id
    )


async def clear_default_signature(conn: asyncpg.Connection, user_id: int) -> None:
    """Drop the user's default mark (call inside the transaction that sets the new one: one default per user)."""
    await conn.execute("SELECT id FROM signatures WHERE user_id = $1 ORDER BY id FOR UPDATE", user_id)
    await conn.execute("UPDATE signatures SET is_default = FALSE WHERE user_id = $1 AND is_default", user_id)


async def insert_signature(
    conn: asyncpg.Connection, user_id: int, name: str, text: str, html: str, is_default: bool
) -> int:
    """Raises asyncpg.UniqueViolationError when the user has a signature of that name."""
    return await conn.fetchval(
        """INSERT INTO signatures (user_id, name, body_text, body_html, is_default)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        user_id, name, text, html, is_default,
    )


async def update_signature(
    conn: asyncpg.Connection, user_id: int, signature_id: int, name: str, text: str, html: str, is_default: bool
) -> bool:
    done = await conn.fetchval(
        """UPDATE signatures SET name = $3, body_text = $4, body_html = $5, is_default = $6, updated_at = now()
            WHERE id = $1 AND user_id = $2 RETURNING id""",
        signature_id, user_id, name, text, html, is_default,
    )
    return done is not None


async def set_default_signature(conn: asyncpg.Connection, user_id: int, signature_id: int) -> bool:
    async with conn.transaction():
        if await signature_by_id(conn, user_id, signature_id) is None:
            return False
        await clear_default_signature(conn, user_id)
        await conn.execute(
            "UPDATE signatures SET is_default = TRUE, updated_at = now() WHERE id = $1 AND user_id = $2",
            signature_id, user_id,
        )
    return True


async def delete_signature(conn: asyncpg.Connection, user_id: int, signature_id: int) -> bool:
    done = await conn.fetchval("DELETE FROM signatures WHERE id = $1 AND user_id = $2 RETURNING id", signature_id, user_id)
    return done is not None


# --- read receipts -----------------------------------------------------------------------------------


async def list_receipts(conn: asyncpg.Connection, user_id: int, status: str | None, limit: int = 500) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {RECEIPT_COLUMNS} FROM read_receipts WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3""",
        user_id, status, limit,
    )


async def receipt_for_update(conn: asyncpg.Connection, message_id: int) -> asyncpg.Record | None:
    """The receipt row of a message, locked until the transaction ends (so a receipt goes out once)."""
    return await conn.fetchrow(f"SELECT {RECEIPT_COLUMNS} FROM read_receipts WHERE message_id = $1 FOR UPDATE", message_id)


async def claim_receipt(conn: asyncpg.Connection, user_id: int, message_id: int, requested_by: str) -> None:
    """Make sure the message has a (locked) receipt row; a concurrent claim waits for this transaction."""
    await conn.execute(
        """INSERT INTO read_receipts (message_id, user_id, requested_by) VALUES ($1, $2, $3)
           ON CONFLICT (message_id) DO NOTHING""",
        message_id, user_id, requested_by,
    )


async def finish_receipt(conn: asyncpg.Connection, message_id: int, status: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""UPDATE read_receipts SET status = $2, sent_at = CASE WHEN $2 = 'sent' THEN now() END
             WHERE message_id = $1 RETURNING {RECEIPT_COLUMNS}""",
        message_id, status,
    )
