"""A fast, never-failing summary of a raw message: the header fields we index plus a plain-text body.

Hand-rolled instead of `email.parser` because it runs for every delivered message: headers are read
only up to the first blank line, and the MIME tree is walked with `bytes.find` over the boundaries,
decoding only the text parts. Any input, however broken, gives a summary; strings in it are valid
Unicode without NUL, so they can go straight into PostgreSQL.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import html
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)

MAX_SUBJECT_CHARS = 998  # RFC 5322 §2.1.1 line limit
MAX_ADDRESS_CHARS = 2000
MAX_ID_CHARS = 998
MAX_REFERENCES_CHARS = 8000
MAX_BODY_BYTES = 64 * 1024
# Raw bytes of one text part we look at: enough to fill MAX_BODY_BYTES after any decoding.
_MAX_PART_INPUT = 4 * MAX_BODY_BYTES + 4096
_MAX_DEPTH = 16
_MAX_PARTS = 500
_MAX_DELIMITER_SCANS = 10_000  # "--boundary" look-alikes checked per multipart before giving up
_MAX_HEADER_BLOCK = 256 * 1024

_WANTED = frozenset(
    {
        "message-id",
        "subject",
        "from",
        "to",
        "cc",
        "date",
        "in-reply-to",
        "references",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)
_HEADER_NAME = re.compile(rb"[!-9;-~]+")  # RFC 5322 §2.2 ftext
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_FILENAME_PARAM = re.compile(r";\s*(?:file)?name(?:\*\d*)?\*?\s*=", re.IGNORECASE)
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_MESSAGE_ID = re.compile(r"<[^<>\s]*>")
# [^<>], not [^>]: a "<" without its ">" must not make the scan quadratic.
_TAG = re.compile(r"<[a-zA-Z/!?][^<>]*>")
_HIDDEN_BLOCK = re.compile(r"<(script|style|head)\b", re.IGNORECASE)
_HIDDEN_BLOCK_END = {
    tag: re.compile(rf"</{tag}[^<>]*>", re.IGNORECASE) for tag in ("script", "style", "head")
}
_LINE_BREAK_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]*>", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n\s*")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_UNSAFE_CHARS = str.maketrans({"\x00": None, "\r": " ", "\n": " "})


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """The fields of a message that the database indexes and the API lists."""

    message_id: str
    subject: str
    from_addr: str
    to_addrs: str
    cc_addrs: str
    sent_date: datetime | None
    in_reply_to: str
    references: str
    has_attachments: bool
    body_text: str


def summarize(raw: bytes) -> MessageSummary:
    """Summarise a raw RFC 5322 message; never raises, whatever the bytes."""
    try:
        return _summarize(bytes(raw))
    except Exception:  # the contract is "any bytes give a summary"; a bug here must not bounce mail
        log.exception("summarize failed on a %d-byte message", len(raw))
        return _EMPTY


def _summarize(raw: bytes) -> MessageSummary:
    headers, body = _split_headers(raw)

    def first(name: str, limit: int) -> str:
        values = headers.get(name)
        return _clean(_decode_words(_unfold(values[0])), limit) if values else ""

    def joined(name: str, limit: int) -> str:
        values = headers.get(name, [])
        return _clean(", ".join(_decode_words(_unfold(v)) for v in values), limit)

    texts: list[str] = []
    htmls: list[str] = []
    walk = _Walk(texts, htmls)
    try:
        walk.part(headers, body, "text/plain", 0)
    except Exception:  # a summary must come out of any input; a bug here costs only the body text
        log.exception("MIME walk failed; summarising headers only")
    body_text = "\n".join(texts) if texts else "\n".join(_strip_html(h) for h in htmls)
    return MessageSummary(
        message_id=first("message-id", MAX_ID_CHARS).strip(),
        subject=first("subject", MAX_SUBJECT_CHARS),
        from_addr=joined("from", MAX_ADDRESS_CHARS),
        to_addrs=joined("to", MAX_ADDRESS_CHARS),
        cc_addrs=joined("cc", MAX_ADDRESS_CHARS),
        sent_date=_parse_date(first("date", MAX_ID_CHARS)),
        in_reply_to=first("in-reply-to", MAX_ID_CHARS).strip(),
        references=first("references", MAX_REFERENCES_CHARS).strip(),
        has_attachments=walk.has_attachments,
        body_text=_truncate_utf8(body_text.replace("\x00", ""), MAX_BODY_BYTES),
    )


_EMPTY = MessageSummary("", "", "", "", "", None, "", "", False, "")


def thread_id(message_id: str, in_reply_to: str, references: str) -> str:
    """Thread key: the first Message-ID of References, else In-Reply-To's, else the message's own, else ''."""
    for value in (references, in_reply_to, message_id):
        found = _first_id(value)
        if found:
            return found
    return ""


def _first_id(value: str) -> str:
    if not value:
        return ""
    match = _MESSAGE_ID.search(value)
    if match and len(match.group()) > 2:
        return match.group()
    tokens = value.split()
    return tokens[0] if tokens else ""


# --- headers ---------------------------------------------------------------------------------------


def _split_headers(raw: bytes) -> tuple[dict[str, list[bytes]], bytes]:
    """The wanted header fields (up to the first blank or non-header line, names lower-cased) and the body."""
    header_end, body_start = _header_end(raw)
    folded: dict[str, list[list[bytes]]] = {}
    current: list[bytes] | None = None
    offset = 0
    for line in raw[:header_end].split(b"\n"):
        line_start, offset = offset, offset + len(line) + 1
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")
        if not colon or not _HEADER_NAME.fullmatch(name):
            if line_start == 0 and line.startswith(b"From "):  # mbox separator line
                continue
            # Not a header: the body starts here (`email.parser` does the same with this defect).
            body_start = line_start
            break
        key = name.decode("ascii").lower()
        current = [value] if key in _WANTED else None
        if current is not None:
            folded.setdefault(key, []).append(current)
    return {key: [b"\n".join(lines) for lines in values] for key, values in folded.items()}, raw[body_start:]


def _header_end(raw: bytes) -> tuple[int, int]:
    """(end of header block, start of body): the first empty line, CRLF or LF; all headers if none."""
    limit = min(len(raw), _MAX_HEADER_BLOCK)
    if raw.startswith(b"\r\n"):
        return 0, 2
    if raw.startswith(b"\n"):
        return 0, 1
    lf = raw.find(b"\n\n", 0, limit)
    crlf = raw.find(b"\n\r\n", 0, limit)
    candidates = [(i, i + 2) for i in (lf,) if i >= 0] + [(i, i + 3) for i in (crlf,) if i >= 0]
    if not candidates:
        return (len(raw), len(raw)) if len(raw) <= limit else (limit, limit)
    return min(candidates)


def _unfold(value: bytes) -> str:
    """Header value bytes -> str: line breaks of folding removed, 8-bit as UTF-8 (else Latin-1)."""
    if b"\n" in value or b"\r" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"")
    return _decode_bytes(value).strip()


def _decode_bytes(value: bytes) -> str:
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words; whitespace between adjacent ones is dropped (RFC 2047 §6.2)."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # adjacent encoded-words, joined before decoding
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if gap and (not pending or gap.strip()):
            _flush(pending, out)
            out.append(gap)
        charset, encoding, text = match.groups()
        charset = charset.split("*", 1)[0].lower()  # RFC 2231 §5 language suffix
        data = text.encode("ascii", "replace")
        decoded = binascii.a2b_qp(data, header=True) if encoding in "qQ" else _decode_base64(data)
        if pending and pending[-1][0] == charset:
            pending[-1] = (charset, pending[-1][1] + decoded)
        else:
            pending.append((charset, decoded))
        pos = match.end()
    _flush(pending, out)
    out.append(value[pos:])
    return "".join(out)


def _flush(pending: list[tuple[str, bytes]], out: list[str]) -> None:
    out.extend(_decode_charset(data, charset) for charset, data in pending)
    pending.clear()


def _clean(value: str, limit: int) -> str:
    return value.translate(_UNSAFE_CHARS).strip()[:limit]


def _parse_date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # "-0000": UTC, origin zone unknown (RFC 5322 §3.3)
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _params(value: str) -> dict[str, str]:
    """Parameters of a Content-Type / Content-Disposition value, names lower-cased, quotes removed."""
    params: dict[str, str] = {}
    for match in _PARAM.finditer(value):
        name, val = match.group(1).lower(), match.group(2).strip()
        if val.startswith('"'):
            val = val[1:-1] if len(val) > 1 and val.endswith('"') else val[1:]
            val = re.sub(r"\\(.)", r"\1", val)
        params.setdefault(name, val)
    return params


# --- body ------------------------------------------------------------------------------------------


class _Walk:
    """Collects text/plain and text/html bodies of a MIME tree and notices attachments."""

    __slots__ = ("texts", "htmls", "has_attachments", "parts", "text_bytes")

    def __init__(self, texts: list[str], htmls: list[str]) -> None:
        self.texts = texts
        self.htmls = htmls
        self.has_attachments = False
        self.parts = 0
        self.text_bytes = 0

    def part(self, headers: dict[str, list[bytes]], body: bytes, default_type: str, depth: int) -> None:
        self.parts += 1
        ctype_raw = _first_header(headers, "content-type")
        ctype = ctype_raw.split(";", 1)[0].strip().lower() or default_type
        disposition = _first_header(headers, "content-disposition")
        is_attachment = disposition.split(";", 1)[0].strip().lower() == "attachment"
        if is_attachment or _FILENAME_PARAM.search(ctype_raw) or _FILENAME_PARAM.search(disposition):
            self.has_attachments = True
        if ctype.startswith("multipart/"):
            boundary = _params(ctype_raw).get("boundary", "")
            if boundary and depth < _MAX_DEPTH:
                child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
                if self._children(body, boundary, child_default, depth):
                    return
            ctype = "text/plain"  # no usable boundary: read it as text, like `email.parser`
        if is_attachment or ctype not in ("text/plain", "text/html"):
            return
        if self.text_bytes >= MAX_BODY_BYTES:
            return
        cte = _first_header(headers, "content-transfer-encoding").lower()
        data = _decode_transfer(body[:_MAX_PART_INPUT], cte)
        text = _decode_charset(data, _params(ctype_raw).get("charset", "utf-8"))
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.text_bytes += len(text)
        (self.texts if ctype == "text/plain" else self.htmls).append(text)

    def _children(self, body: bytes, boundary: str, default_type: str, depth: int) -> bool:
        """Walk the parts between `--boundary` lines (RFC 2046 §5.1.1); False if there is no such line."""
        delimiter = b"--" + boundary.encode("utf-8", "replace")
        delimiters: list[tuple[int, int, bool]] = []  # (line start, next line start, is closing)
        pos = 0
        scans = 0
        # One delimiter beyond the part budget, so the last part we read still ends where it should.
        while len(delimiters) <= _MAX_PARTS - self.parts:
            found = body.find(delimiter, pos)
            scans += 1
            if found < 0 or scans > _MAX_DELIMITER_SCANS:
                break
            pos = found + len(delimiter)
            if found and body[found - 1] != 0x0A:  # not at a line start
                continue
            line_end = body.find(b"\n", pos)
            next_line = len(body) if line_end < 0 else line_end + 1
            tail = body[pos:next_line].rstrip(b" \t\r\n")
            if tail and not tail.startswith(b"--"):
                continue  # "--boundaryX": a longer line, not our delimiter
            delimiters.append((found, next_line, bool(tail)))
            if tail:
                break
        if not delimiters:
            return False
        for index, (_, content_start, closing) in enumerate(delimiters):
            if closing or self.parts >= _MAX_PARTS:
                break
            if index + 1 < len(delimiters):
                end = delimiters[index + 1][0]
                # The line break before a delimiter belongs to the delimiter.
                end -= 2 if body[end - 2 : end] == b"\r\n" else 1
            else:
                end = len(body)  # no closing delimiter: the last part runs to the end
            child_headers, child_body = _split_headers(body[content_start : max(end, content_start)])
            self.part(child_headers, child_body, default_type, depth + 1)
        return True


def _first_header(headers: dict[str, list[bytes]], name: str) -> str:
    values = headers.get(name)
    return _unfold(values[0]) if values else ""


def _decode_transfer(data: bytes, cte: str) -> bytes:
    if cte == "base64":
        return _decode_base64(data)
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


def _decode_base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        cleaned = _NOT_BASE64.sub(b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        try:
            return binascii.a2b_base64(cleaned)
        except (binascii.Error, ValueError):
            return b""


def _decode_charset(data: bytes, charset: str) -> str:
    """Bytes in a declared charset -> str; undeclared, unknown or unsafe charsets read as UTF-8 (else cp1252)."""
    if data.isascii():
        return data.decode("ascii")
    codec = _text_codec(charset)
    if codec in (None, "utf-8", "ascii"):  # 8-bit text labelled us-ascii is nearly always UTF-8
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")
    try:
        text = data.decode(codec, "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")
    # A codec such as utf-7 can hand back lone surrogates; PostgreSQL would refuse them.
    return text.encode("utf-8", "replace").decode("utf-8")


# Text codecs that are not mail charsets, or are quadratic in pure Python on hostile input.
_REFUSED_CODECS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "utf-8-sig"})


@functools.lru_cache(maxsize=256)
def _text_codec(charset: str) -> str | None:
    name = charset.strip().strip('"').lower()
    if not name or len(name) > 64:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED_CODECS:
        return None
    return info.name


def _strip_html(markup: str) -> str:
    """Crude HTML -> text: drop script/style/head blocks and tags, unescape entities, squeeze blanks."""
    pieces: list[str] = []
    pos = 0
    while (block := _HIDDEN_BLOCK.search(markup, pos)) is not None:
        pieces.append(markup[pos : block.start()])
        close = _HIDDEN_BLOCK_END[block.group(1).lower()].search(markup, block.end())
        pos = len(markup) if close is None else close.end()
    pieces.append(markup[pos:])
    text = _LINE_BREAK_TAG.sub("\n", "".join(pieces))
    text = html.unescape(_TAG.sub(" ", text))
    text = _SPACES.sub(" ", text.replace("\xa0", " "))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _truncate_utf8(text: str, limit: int) -> str:
    if len(text) * 4 <= limit:
        return text
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")
