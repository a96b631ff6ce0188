"""SEARCH criteria evaluated against one message (RFC 3501 §6.4.4, RFC 7162 §3.1.5 MODSEQ).

Flags, sizes, dates and numbers come from `MessageMeta`; header and text keys read the raw message
through `whymail.mime`, decoding RFC 2047 words, transfer encodings and charsets, and match as
case-insensitive substrings.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.header
import email.utils
import quopri
from dataclasses import dataclass, field

from whymail.imap.searchkeys import (
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
    UidKey,
)
from whymail.imap.storage import MessageMeta
from whymail.mime.headers import field_value, split_header
from whymail.mime.structure import MimePart, parse_structure

SUPPORTED_CHARSETS = frozenset({"UTF-8", "US-ASCII"})
_FLAG_TESTS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}
_ADDRESS_HEADERS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}


def needs_message(key: SearchKey) -> bool:
    """Whether evaluating `key` reads the raw message (header, text or sent-date keys)."""
    if isinstance(key, TextKey | HeaderKey):
        return True
    if isinstance(key, DateKey):
        return key.name.startswith("SENT")
    if isinstance(key, NotKey):
        return needs_message(key.key)
    if isinstance(key, OrKey):
        return needs_message(key.left) or needs_message(key.right)
    if isinstance(key, AndKey):
        return any(needs_message(k) for k in key.keys)
    return False


def uses_modseq(key: SearchKey) -> bool:
    """Whether the key contains MODSEQ (the SEARCH response then carries `(MODSEQ n)`)."""
    if isinstance(key, ModSeqKey):
        return True
    if isinstance(key, NotKey):
        return uses_modseq(key.key)
    if isinstance(key, OrKey):
        return uses_modseq(key.left) or uses_modseq(key.right)
    if isinstance(key, AndKey):
        return any(uses_modseq(k) for k in key.keys)
    return False


@dataclass(slots=True)
class MessageText:
    """Decoded headers and body text of a raw message, computed on first use."""

    raw: bytes
    _headers: list[tuple[str, str]] | None = None
    _body: str | None = None
    _structure: MimePart | None = field(default=None)

    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, decoded unfolded value) in order."""
        if self._headers is None:
            fields, _ = split_header(self.raw, 0, len(self.raw))
            self._headers = [(f.name.lower(), decode_words(field_value(self.raw, f))) for f in fields]
        return self._headers

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for field_name, value in self.headers() if field_name == name]

    def body(self) -> str:
        """The text of every text/* leaf, transfer-decoded and charset-decoded, joined by newlines."""
        if self._body is None:
            self._structure = parse_structure(self.raw)
            pieces: list[str] = []
            _collect_text(self.raw, self._structure, pieces, top=True)
            self._body = "\n".join(pieces)
        return self._body

    def sent_date(self) -> dt.date | None:
        values = self.header_values("date")
        if not values:
            return None
        try:
            return email.utils.parsedate_to_datetime(values[0]).date()
        except (TypeError, ValueError, IndexError):
            return None


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; the value unchanged when they are malformed."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, binascii.Error):
        return value


def _collect_text(raw: bytes, part: MimePart, out: list[str], *, top: bool = False) -> None:
    if part.children:
        for child in part.children:
            _collect_text(raw, child, out)
        return
    if part.message is not None:
        fields, _ = split_header(raw, part.message.header_start, part.message.body_start)
        out.extend(decode_words(field_value(raw, f)) for f in fields)
        _collect_text(raw, part.message, out)
        return
    if part.type != "text":
        return
    out.append(decode_body(raw[part.body_start : part.body_end], part.encoding, part.params.get("charset")))


def decode_body(data: bytes, encoding: str, charset: str | None) -> str:
    """Transfer-decode then charset-decode a leaf body, never raising."""
    if encoding == "base64":
        try:
            data = base64.b64decode(b"".join(data.split()), validate=False)
        except (binascii.Error, ValueError):
            pass
    elif encoding == "quoted-printable":
        data = quopri.decodestring(data)
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


@dataclass(slots=True)
class SearchTarget:
    """One message as SEARCH sees it: sequence number, metadata and (lazily) its text."""

    seq: int
    meta: MessageMeta
    last_seq: int
    last_uid: int
    text: MessageText | None = None


def matches(key: SearchKey, target: SearchTarget) -> bool:
    """Whether the message satisfies `key`."""
    meta = target.meta
    if isinstance(key, FlagKey):
        return _flag_matches(key.name, meta.flags)
    if isinstance(key, AndKey):
        return all(matches(k, target) for k in key.keys)
    if isinstance(key, OrKey):
        return matches(key.left, target) or matches(key.right, target)
    if isinstance(key, NotKey):
        return not matches(key.key, target)
    if isinstance(key, KeywordKey):
        has = any(flag.lower() == key.keyword.lower() for flag in meta.flags)
        return has if key.name == "KEYWORD" else not has
    if isinstance(key, SizeKey):
        return meta.size > key.size if key.name == "LARGER" else meta.size < key.size
    if isinstance(key, SequenceKey):
        return key.sequence_set.contains(target.seq, target.last_seq)
    if isinstance(key, UidKey):
        return key.sequence_set.contains(meta.uid, target.last_uid)
    if isinstance(key, ModSeqKey):
        return meta.modseq >= key.modseq
    if isinstance(key, DateKey):
        return _date_matches(key, target)
    if isinstance(key, TextKey | HeaderKey):
        assert target.text is not None, "needs_message() keys need the message text"
        return _text_matches(key, target.text)
    raise ValueError(f"unknown search key {key!r}")


def _flag_matches(name: str, flags: frozenset[str]) -> bool:
    if name in _FLAG_TESTS:
        flag, wanted = _FLAG_TESTS[name]
        return (flag in flags) == wanted
    if name in ("ALL", "OLD"):
        return True
    if name in ("NEW", "RECENT"):
        return False  # this server never reports \Recent (RECENT is always 0)
    raise ValueError(f"unknown flag key {name}")


def _date_matches(key: DateKey, target: SearchTarget) -> bool:
    # RFC 3501 §6.4.4: dates disregard time and timezone.
    if key.name.startswith("SENT"):
        assert target.text is not None
        day = target.text.sent_date() or target.meta.internal_date.date()
        op = key.name[4:]
    else:
        day = target.meta.internal_date.date()
        op = key.name
    if op == "BEFORE":
        return day < key.date
    if op == "ON":
        return day == key.date
    return day >= key.date  # SINCE


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


def _text_matches(key: TextKey | HeaderKey, text: MessageText) -> bool:
    if isinstance(key, HeaderKey):
        values = text.header_values(key.field)
        return bool(values) and any(_contains(v, key.value) for v in values)
    if key.name in _ADDRESS_HEADERS:
        return any(_contains(v, key.value) for v in text.header_values(_ADDRESS_HEADERS[key.name]))
    if key.name == "BODY":
        return _contains(text.body(), key.value)
    # TEXT: header and body
    return any(_contains(f"{name}: {value}", key.value) for name, value in text.headers()) or _contains(
        text.body(), key.value
    )
