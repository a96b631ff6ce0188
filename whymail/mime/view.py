"""What a mail reader shows of a raw message: its text body, its HTML body and its attachments.

Built on the byte-offset MIME tree of `structure.py`, so a part is named by its IMAP section number
("1", "2.1", …) and the attachment a client downloads is exactly the part the list named.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import getaddresses

from whymail.mime.headers import first_value, split_header
from whymail.mime.sections import find_part
from whymail.mime.structure import MimePart, parse_structure

_PART_ID = re.compile(r"[1-9][0-9]{0,4}(?:\.[1-9][0-9]{0,4}){0,19}")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}")


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    part: str
    filename: str
    content_type: str
    size: int
    content_id: str | None
    inline: bool


@dataclass(frozen=True, slots=True)
class MessageView:
    text: str | None
    html: str | None  # as received: sanitize before showing it
    attachments: tuple[AttachmentInfo, ...]
    reply_to: tuple[str, ...]
    references: tuple[str, ...]


def decode_transfer(data: bytes, encoding: str) -> bytes:
    """A body part's bytes with its Content-Transfer-Encoding undone (lenient, like mail readers)."""
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            cleaned = _NOT_BASE64.sub(b"", data)
            try:
                return binascii.a2b_base64(cleaned[: len(cleaned) - len(cleaned) % 4])
            except (binascii.Error, ValueError):
                return b""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


def decode_text(data: bytes, charset: str | None) -> str:
    """Text bytes in their declared charset; unknown charsets read as UTF-8, then cp1252."""
    try:
        codec = codecs.lookup((charset or "utf-8").strip().strip('"') or "utf-8")
        if not getattr(codec, "_is_text_encoding", True):
            raise LookupError(charset)
        if codec.name not in ("utf-8", "ascii"):
            return data.decode(codec.name, "replace").encode("utf-8", "replace").decode("utf-8")
    except (LookupError, ValueError, TypeError):
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def decode_words(value: str) -> str:
    """An RFC 2047 encoded header value as text; the value itself when it cannot be decoded."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def parse_part_id(text: str) -> tuple[int, ...] | None:
    """"2.1" -> (2, 1); None for anything that is not a section number."""
    if not _PART_ID.fullmatch(text):
        return None
    return tuple(int(n) for n in text.split("."))


def part_filename(part: MimePart) -> str:
    name = part.disposition_params.get("filename") or part.params.get("name") or ""
    return decode_words(name).replace("\x00", "").strip()


def content_type(part: MimePart) -> str:
    """`type/subtype` when both are plain tokens, else application/octet-stream."""
    if _TOKEN.fullmatch(part.type) and _TOKEN.fullmatch(part.subtype):
        return f"{part.type}/{part.subtype}".lower()
    return "application/octet-stream"


def part_charset(part: MimePart) -> str | None:
    charset = part.params.get("charset")
    return charset if charset and _TOKEN.fullmatch(charset) else None


def part_bytes(raw: bytes, part: MimePart) -> bytes:
    """The decoded content of a leaf part."""
    return decode_transfer(raw[part.body_start : part.body_end], part.encoding)


def find_leaf(raw: bytes, part_id: str) -> MimePart | None:
    """The non-multipart part a section number names, or None."""
    numbers = parse_part_id(part_id)
    if numbers is None:
        return None
    part = find_part(parse_structure(raw), numbers)
    if part is None or part.is_multipart:
        return None
    return part


def message_view(raw: bytes) -> MessageView:
    """Text and HTML bodies (the first of each outside attachments) and every other leaf as an attachment."""
    root = parse_structure(raw)
    texts: dict[str, str] = {}
    attachments: list[AttachmentInfo] = []
    for part_id, part in _leaves(root, ()):
        filename = part_filename(part)
        is_attachment = part.disposition == "attachment" or bool(filename)
        kind = content_type(part)
        if not is_attachment and kind in ("text/plain", "text/html") and kind not in texts:
            texts[kind] = decode_text(part_bytes(raw, part), part_charset(part))
            continue
        content_id = (part.id or "").strip().strip("<>") or None
        attachments.append(AttachmentInfo(
            part=part_id, filename=filename or _fallback_name(part_id, kind), content_type=kind,
            size=len(part_bytes(raw, part)), content_id=content_id, inline=part.disposition == "inline",
        ))
    fields, _ = split_header(raw, 0, len(raw))
    reply_to = first_value(raw, fields, "reply-to") or ""
    references = first_value(raw, fields, "references") or ""
    return MessageView(
        text=texts.get("text/plain"), html=texts.get("text/html"), attachments=tuple(attachments),
        reply_to=tuple(addr for _, addr in getaddresses([decode_words(reply_to)]) if addr),
        references=tuple(re.findall(r"<[^<>\s]+>", references)),
    )


def _leaves(part: MimePart, prefix: tuple[int, ...]):
    """(section number, part) of every leaf, in order; message/rfc822 parts are leaves (downloadable)."""
    if part.is_multipart:
        for index, child in enumerate(part.children, 1):
            yield from _leaves(child, (*prefix, index))
    else:
        yield ".".join(map(str, prefix or (1,))), part


def _fallback_name(part_id: str, kind: str) -> str:
    extension = {"message/rfc822": ".eml", "text/plain": ".txt", "text/html": ".html"}.get(kind, ".bin")
    return f"part-{part_id}{extension}"
