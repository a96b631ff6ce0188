"""Token-level reading of one complete IMAP command (RFC 3501 §9), literals inlined.

A `Cursor` walks the bytes of a command exactly as sent, `{n}` CRLF and the literal data included,
and raises `ImapParseError` (carrying the tag once known) at the first thing that does not fit.
"""

from __future__ import annotations

import datetime as dt
import re

from whymail.imap.errors import ImapParseError, excerpt
from whymail.imap.sequence import SequenceSet, parse_sequence_set
from whymail.imap.utf7 import decode_mailbox

# RFC 3501 §9: ATOM-CHAR is any CHAR except atom-specials ( ) { SP CTL % * " \ ]
ATOM_CHARS = frozenset(range(0x21, 0x7F)) - frozenset(b'(){%*"\\]')
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
LIST_CHARS = ATOM_CHARS | frozenset(b"%*]")
TAG_CHARS = ASTRING_CHARS - {ord("+")}
SEQUENCE_CHARS = frozenset(b"0123456789:*,")
ITEM_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
MAX_NUMBER = 2**32 - 1
MAX_MODSEQ = 2**63 - 1

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATE_TIME = re.compile(
    rb"^([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})$"
)
_DATE = re.compile(rb"^([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})$")
_LITERAL_HEADER = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?\n")


class Cursor:
    """A read position in one command; every method consumes input or raises ImapParseError."""

    def __init__(self, data: bytes, tag: str | None = None) -> None:
        self.data = data
        self.pos = 0
        self.tag = tag

    def error(self, text: str, code: str | None = None) -> ImapParseError:
        return ImapParseError(text, tag=self.tag, code=code)

    # --- basic -----------------------------------------------------------------------------------

    def at_end(self) -> bool:
        """At the end of the command; a final CRLF (outside any literal) counts as the end."""
        remaining = len(self.data) - self.pos
        return remaining <= 0 or (remaining <= 2 and self.data[self.pos :] in (b"\r\n", b"\n"))

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def maybe(self, token: bytes) -> bool:
        """Consume `token` (ASCII, case-insensitive) if it comes next."""
        end = self.pos + len(token)
        if self.data[self.pos : end].upper() == token.upper():
            self.pos = end
            return True
        return False

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.maybe(token):
            raise self.error(f"expected {what or token.decode()}{self._near()}")

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def end(self) -> None:
        if not self.at_end():
            raise self.error(f"unexpected trailing data{self._near()}")

    def _near(self) -> str:
        if self.at_end():
            return " at end of command"
        return f' near "{excerpt(self.data[self.pos : self.pos + 40])}"'

    def _take_while(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in allowed:
            self.pos += 1
        return data[start : self.pos]

    # --- atoms and numbers -------------------------------------------------------------------------

    def atom(self, what: str = "an atom") -> str:
        token = self._take_while(ATOM_CHARS)
        if not token:
            raise self.error(f"expected {what}{self._near()}")
        return token.decode("ascii")

    def keyword(self, what: str = "a keyword") -> str:
        """An atom upper-cased (command names, item names, options)."""
        return self.atom(what).upper()

    def item_name(self, what: str) -> str:
        """Letters, digits, '.' and '-' upper-cased: FETCH item names, which may be followed by '['."""
        token = self._take_while(ITEM_NAME_CHARS)
        if not token:
            raise self.error(f"expected {what}{self._near()}")
        return token.decode("ascii").upper()

    def tag_token(self) -> str:
        token = self._take_while(TAG_CHARS)
        if not token:
            raise self.error("missing or invalid tag")
        return token.decode("ascii")

    def number(self, maximum: int = MAX_NUMBER, what: str = "a number") -> int:
        token = self._take_while(frozenset(b"0123456789"))
        if not token or len(token) > len(str(maximum)) or int(token) > maximum:
            raise self.error(f"expected {what}{self._near()}")
        return int(token)

    def nz_number(self, what: str = "a non-zero number") -> int:
        value = self.number(what=what)
        if value == 0:
            raise self.error(f"expected {what}")
        return value

    def sequence_set(self) -> SequenceSet:
        token = self._take_while(SEQUENCE_CHARS)
        try:
            return parse_sequence_set(token.decode("ascii"))
        except ValueError as exc:
            raise self.error(f"invalid sequence set: {exc}") from None

    # --- strings -------------------------------------------------------------------------------------

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self.error("unterminated quoted string")
            byte = data[self.pos]
            self.pos += 1
            if byte == 0x22:
                return bytes(out)
            if byte == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in (0x22, 0x5C):
                    raise self.error("only \\\" and \\\\ may be escaped in a quoted string")
                byte = data[self.pos]
                self.pos += 1
            elif byte in (0x00, 0x0A, 0x0D):
                raise self.error("CR, LF and NUL are not allowed in a quoted string")
            out.append(byte)

    def literal(self) -> bytes:
        match = _LITERAL_HEADER.match(self.data, self.pos)
        if not match:
            raise self.error(f"expected a literal{self._near()}")
        size = int(match.group(1))
        start = match.end()
        if size > MAX_NUMBER or start + size > len(self.data):
            raise self.error("literal is shorter than announced")
        self.pos = start + size
        return self.data[start : self.pos]

    def string(self) -> bytes:
        return self.literal() if self.peek() == 0x7B else self.quoted()

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        token = self._take_while(ASTRING_CHARS)
        if not token:
            raise self.error(f"expected a string{self._near()}")
        return token

    def nstring(self) -> bytes | None:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        if self.maybe(b"NIL"):
            return None
        raise self.error(f"expected a string or NIL{self._near()}")

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("string is not valid UTF-8") from None

    def astring_text(self) -> str:
        return self.text(self.astring())

    def string_text(self) -> str:
        return self.text(self.string())

    # --- mailboxes, flags, dates ----------------------------------------------------------------------

    def mailbox(self) -> str:
        """A mailbox name, decoded from modified UTF-7; INBOX in any case becomes "INBOX"."""
        return self._decode_name(self.astring(), normalise_inbox=True)

    def list_mailbox(self) -> str:
        """A LIST pattern: 1*list-char (with % and *) or a string, decoded from modified UTF-7."""
        if self.peek() in (0x22, 0x7B):
            raw = self.string()
        else:
            raw = self._take_while(LIST_CHARS)
            if not raw:
                raise self.error(f"expected a mailbox pattern{self._near()}")
        return self._decode_name(raw, normalise_inbox=False)

    def _decode_name(self, raw: bytes, normalise_inbox: bool) -> str:
        try:
            name = decode_mailbox(raw.decode("ascii"))
        except ValueError:
            raise self.error("mailbox name is not valid modified UTF-7") from None
        if normalise_inbox and name.upper() == "INBOX":
            return "INBOX"
        return name

    def flag(self) -> str:
        """A flag: `\\Seen` style (system flags get their canonical case) or a keyword atom."""
        if self.maybe(b"\\"):
            name = "\\" + self.atom("a flag name")
            return SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(", "a flag list")
        flags: list[str] = []
        while not self.maybe(b")"):
            if flags:
                self.sp()
            flags.append(self.flag())
        return tuple(flags)

    def keyword_list(self, what: str) -> tuple[str, ...]:
        """`(ATOM ATOM ...)`, possibly empty, upper-cased."""
        self.expect(b"(", f"a parenthesised list of {what}")
        items: list[str] = []
        while not self.maybe(b")"):
            if items:
                self.sp()
            items.append(self.keyword(what))
        return tuple(items)

    def date_time(self) -> dt.datetime:
        raw = self.quoted()
        match = _DATE_TIME.match(raw)
        if not match:
            raise self.error("invalid date-time, expected \"dd-Mon-yyyy hh:mm:ss +zzzz\"")
        day, month, year, hour, minute, second, sign, zh, zm = match.groups()
        try:
            offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
            return dt.datetime(
                int(year), _month(month), int(day.strip()), int(hour), int(minute), int(second),
                tzinfo=dt.timezone(offset),
            )
        except ValueError:
            raise self.error("invalid date-time value") from None

    def date(self) -> dt.date:
        raw = self.quoted() if self.peek() == 0x22 else self._take_while(ATOM_CHARS)
        match = _DATE.match(raw)
        if not match:
            raise self.error("invalid date, expected dd-Mon-yyyy")
        try:
            return dt.date(int(match.group(3)), _month(match.group(2)), int(match.group(1)))
        except ValueError:
            raise self.error("invalid date value") from None


SYSTEM_FLAGS = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


def _month(name: bytes) -> int:
    try:
        return MONTHS.index(name.decode("ascii").capitalize()) + 1
    except ValueError:
        raise ValueError("unknown month") from None
