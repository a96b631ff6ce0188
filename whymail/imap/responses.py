"""Typed IMAP server responses (RFC 3501 §7 and extensions), ready for `encoder.encode_response`.

Every model is a frozen, slotted dataclass that validates or normalises its fields on construction,
so that whatever a model holds can be encoded as legal IMAP syntax:

- protocol tokens (tags, flags, capabilities, status item names, sequence sets) are validated and a
  bad one raises `ValueError`: they come from our own code or from the command parser;
- human text (resp-text) is sanitised: CR, LF and NUL become spaces, 8-bit characters become "?";
- message data (BODY[] bytes) has NUL replaced by 0x80, because a non-binary literal may not carry
  NUL (RFC 3501 §9 CHAR8; Dovecot does the same).

As a result `response_parser.parse_response(encode_response(r)) == r` holds for every model.
Mailbox names are plain `str` already in modified UTF-7 (the session layer encodes them).
The FETCH data items live in `fetch_data` and the token checks in `wire_checks`; both are re-exported
here, so `whymail.imap.responses` is the one import for the session layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from whymail.imap.fetch_data import (
    ADDRESS_FIELDS,
    Address,
    Envelope,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchItem,
    FetchModSeq,
    FetchRfc822,
    FetchSize,
    FetchUid,
    Value,
    is_message_rfc822,
    leading_parts,
    normalise_date,
)
from whymail.imap.wire_checks import (
    MAX_MODSEQ,
    MAX_NUMBER,
    check_atom,
    check_flag,
    check_number,
    check_seq_set,
    check_string,
    clean_text,
    is_atom,
    set_field,
)

_DEFAULT_TEXT = {"OK": "completed", "NO": "failed", "BAD": "invalid command", "BYE": "logging out",
                 "PREAUTH": "logged in"}


def _resp_text(text: str, status: str, has_code: bool) -> str:
    text = clean_text(text) or _DEFAULT_TEXT[status]
    if not has_code and text.startswith("["):
        text = " " + text  # otherwise a client would read it as a response code (RFC 3501 §7.1)
    return text


# --- response codes (RFC 3501 §7.1, RFC 4315, RFC 5530, RFC 7162) -------------------------------

SIMPLE_CODES = frozenset({
    "ALERT", "PARSE", "READ-ONLY", "READ-WRITE", "TRYCREATE", "NOMODSEQ", "CLOSED", "UIDNOTSTICKY",
    # RFC 5530
    "UNAVAILABLE", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED",
    "CONTACTADMIN", "NOPERM", "INUSE", "EXPUNGEISSUED", "CORRUPTION", "SERVERBUG", "CLIENTBUG",
    "CANNOT", "LIMIT", "OVERQUOTA", "ALREADYEXISTS", "NONEXISTENT",
})
NUMBER_CODES = frozenset({"UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"})
_STRUCTURED_CODES = NUMBER_CODES | {"BADCHARSET", "CAPABILITY", "PERMANENTFLAGS", "MODIFIED",
                                    "APPENDUID", "COPYUID"}


@dataclass(frozen=True, slots=True)
class Code:
    """An atom-only code such as [ALERT] or [NONEXISTENT], or an unknown code with raw argument text."""

    name: str
    argument: str | None = None

    def __post_init__(self) -> None:
        set_field(self, "name", check_atom(self.name, "response code").upper())  # atoms are case-insensitive
        if self.name in _STRUCTURED_CODES:
            raise ValueError(f"use the dedicated class for [{self.name}]")
        if self.argument is not None and (
            not self.argument or "]" in self.argument or clean_text(self.argument) != self.argument
        ):
            raise ValueError(f"invalid response code argument: {self.argument!r}")


@dataclass(frozen=True, slots=True)
class BadCharsetCode:
    """[BADCHARSET (charset ...)]; an empty tuple encodes as bare [BADCHARSET]."""

    charsets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_field(self, "charsets", tuple(check_string(c, "charset") for c in self.charsets))


@dataclass(frozen=True, slots=True)
class CapabilityCode:
    capabilities: tuple[str, ...]

    def __post_init__(self) -> None:
        set_field(self, "capabilities", tuple(check_atom(c, "capability") for c in self.capabilities))


@dataclass(frozen=True, slots=True)
class PermanentFlagsCode:
    flags: tuple[str, ...]

    def __post_init__(self) -> None:
        set_field(self, "flags", tuple(check_flag(f, allow_wildcard=True) for f in self.flags))


@dataclass(frozen=True, slots=True)
class NumberCode:
    """[UIDNEXT n], [UIDVALIDITY n], [UNSEEN n] or [HIGHESTMODSEQ n]."""

    name: Literal["UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"]
    value: int

    def __post_init__(self) -> None:
        if self.name not in NUMBER_CODES:
            raise ValueError(f"not a number code: {self.name!r}")
        check_number(self.value, self.name, maximum=MAX_MODSEQ if self.name == "HIGHESTMODSEQ" else MAX_NUMBER)


@dataclass(frozen=True, slots=True)
class ModifiedCode:
    """[MODIFIED set] (RFC 7162 §3.1.3): messages that failed the UNCHANGEDSINCE test."""

    uids: str

    def __post_init__(self) -> None:
        check_seq_set(self.uids, "MODIFIED set")


@dataclass(frozen=True, slots=True)
class AppendUidCode:
    """[APPENDUID uidvalidity uid-set] (RFC 4315 §3)."""

    uidvalidity: int
    uids: str

    def __post_init__(self) -> None:
        check_number(self.uidvalidity, "uidvalidity", minimum=1)
        check_seq_set(self.uids, "APPENDUID set")


@dataclass(frozen=True, slots=True)
class CopyUidCode:
    """[COPYUID uidvalidity source-set destination-set] (RFC 4315 §3)."""

    uidvalidity: int
    source: str
    destination: str

    def __post_init__(self) -> None:
        check_number(self.uidvalidity, "uidvalidity", minimum=1)
        check_seq_set(self.source, "COPYUID source set")
        check_seq_set(self.destination, "COPYUID destination set")


ResponseCode = (Code | BadCharsetCode | CapabilityCode | PermanentFlagsCode | NumberCode | ModifiedCode |
    AppendUidCode | CopyUidCode)



def _check_code(code: object) -> None:
    if code is not None and not isinstance(code, ResponseCode):
        raise ValueError(f"not a response code: {code!r}")


# --- status responses --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tagged:
    """`tag OK|NO|BAD [code] text`: the completion of one command (RFC 3501 §7.1)."""

    tag: str
    status: Literal["OK", "NO", "BAD"]
    text: str = ""
    code: ResponseCode | None = None

    def __post_init__(self) -> None:
        if not is_atom(self.tag, allow_bracket=True) or "+" in self.tag:
            raise ValueError(f"invalid tag: {self.tag!r}")  # RFC 3501 §9 tag
        if self.status not in ("OK", "NO", "BAD"):
            raise ValueError(f"invalid tagged status: {self.status!r}")
        _check_code(self.code)
        set_field(self, "text", _resp_text(self.text, self.status, self.code is not None))


@dataclass(frozen=True, slots=True)
class Untagged:
    """`* OK|NO|BAD|BYE|PREAUTH [code] text` (RFC 3501 §7.1)."""

    status: Literal["OK", "NO", "BAD", "BYE", "PREAUTH"]
    text: str = ""
    code: ResponseCode | None = None

    def __post_init__(self) -> None:
        if self.status not in _DEFAULT_TEXT:
            raise ValueError(f"invalid untagged status: {self.status!r}")
        _check_code(self.code)
        set_field(self, "text", _resp_text(self.text, self.status, self.code is not None))


@dataclass(frozen=True, slots=True)
class Continuation:
    """`+ text` (RFC 3501 §7.5); text may be empty (an empty SASL challenge)."""

    text: str = ""

    def __post_init__(self) -> None:
        set_field(self, "text", clean_text(self.text))


# --- server and mailbox data (RFC 3501 §7.2-7.4) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    capabilities: tuple[str, ...]

    def __post_init__(self) -> None:
        set_field(self, "capabilities", tuple(check_atom(c, "capability") for c in self.capabilities))


@dataclass(frozen=True, slots=True)
class Enabled:
    """`* ENABLED cap ...` (RFC 5161)."""

    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_field(self, "capabilities", tuple(check_atom(c, "capability") for c in self.capabilities))


def _delimiter(delimiter: str | None) -> str | None:
    if delimiter is not None and (len(delimiter) != 1 or clean_text(delimiter) != delimiter):
        raise ValueError(f"invalid hierarchy delimiter: {delimiter!r}")  # RFC 3501 §9 QUOTED-CHAR
    return delimiter


@dataclass(frozen=True, slots=True)
class ListResponse:
    """`* LIST (attrs) "delim" mailbox` or LSUB (RFC 3501 §7.2.2-7.2.3, RFC 6154 special-use)."""

    attributes: tuple[str, ...]
    delimiter: str | None
    mailbox: str
    command: Literal["LIST", "LSUB"] = "LIST"

    def __post_init__(self) -> None:
        for attr in self.attributes:
            if not attr.startswith("\\"):
                raise ValueError(f"invalid mailbox attribute: {attr!r}")
            check_flag(attr)
        set_field(self, "attributes", tuple(self.attributes))
        _delimiter(self.delimiter)
        set_field(self, "mailbox", check_string(self.mailbox))
        if self.command not in ("LIST", "LSUB"):
            raise ValueError(f"invalid list command: {self.command!r}")


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """`* STATUS mailbox (MESSAGES n UIDNEXT n ... HIGHESTMODSEQ n)` (RFC 3501 §7.2.4, RFC 7162)."""

    mailbox: str
    items: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        set_field(self, "mailbox", check_string(self.mailbox))
        items = tuple((check_atom(name, "status item").upper(), value) for name, value in self.items)
        for name, value in items:
            check_number(value, name, maximum=MAX_MODSEQ)
        set_field(self, "items", items)


@dataclass(frozen=True, slots=True)
class Search:
    """`* SEARCH n ...` with the optional `(MODSEQ n)` of RFC 7162 §3.1.5 (only when non-empty)."""

    numbers: tuple[int, ...] = ()
    modseq: int | None = None

    def __post_init__(self) -> None:
        set_field(self, "numbers", tuple(check_number(n, "message number", minimum=1) for n in self.numbers))
        if not self.numbers:
            set_field(self, "modseq", None)
        elif self.modseq is not None:
            check_number(self.modseq, "modseq", minimum=1, maximum=MAX_MODSEQ)


@dataclass(frozen=True, slots=True)
class ESearch:
    """`* ESEARCH [(TAG "t")] [UID] [MIN n] [MAX n] [ALL set] [COUNT n] [MODSEQ n]` (RFC 4731, 7162)."""

    tag: str | None = None
    uid: bool = False
    min: int | None = None
    max: int | None = None
    all: str | None = None
    count: int | None = None
    modseq: int | None = None

    def __post_init__(self) -> None:
        if self.tag is not None:
            Tagged(self.tag, "OK")  # same syntax as a command tag
        for name in ("min", "max"):
            if getattr(self, name) is not None:
                check_number(getattr(self, name), name, minimum=1)
        if self.all is not None:
            check_seq_set(self.all, "ALL set")
        if self.count is not None:
            check_number(self.count, "count")
        if self.modseq is not None:
            check_number(self.modseq, "modseq", minimum=1, maximum=MAX_MODSEQ)


@dataclass(frozen=True, slots=True)
class Flags:
    flags: tuple[str, ...]

    def __post_init__(self) -> None:
        set_field(self, "flags", tuple(check_flag(f) for f in self.flags))


@dataclass(frozen=True, slots=True)
class Exists:
    count: int

    def __post_init__(self) -> None:
        check_number(self.count, "EXISTS count")


@dataclass(frozen=True, slots=True)
class Recent:
    count: int

    def __post_init__(self) -> None:
        check_number(self.count, "RECENT count")


@dataclass(frozen=True, slots=True)
class Expunge:
    number: int

    def __post_init__(self) -> None:
        check_number(self.number, "message number", minimum=1)


@dataclass(frozen=True, slots=True)
class Vanished:
    """`* VANISHED [(EARLIER)] uid-set` (RFC 7162 §3.2.10)."""

    uids: str
    earlier: bool = False

    def __post_init__(self) -> None:
        check_seq_set(self.uids, "VANISHED set")


@dataclass(frozen=True, slots=True)
class NamespaceEntry:
    prefix: str
    delimiter: str | None

    def __post_init__(self) -> None:
        set_field(self, "prefix", check_string(self.prefix, "namespace prefix"))
        _delimiter(self.delimiter)


@dataclass(frozen=True, slots=True)
class Namespace:
    """`* NAMESPACE personal other shared` (RFC 2342 §5); an empty tuple is normalised to None (NIL)."""

    personal: tuple[NamespaceEntry, ...] | None = None
    other: tuple[NamespaceEntry, ...] | None = None
    shared: tuple[NamespaceEntry, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("personal", "other", "shared"):
            set_field(self, name, tuple(getattr(self, name)) or None if getattr(self, name) is not None else None)


@dataclass(frozen=True, slots=True)
class Id:
    """`* ID ("name" "WhyMail" ...)` or `* ID NIL` (RFC 2971 §3.2); empty parameters become NIL."""

    params: tuple[tuple[str, str | None], ...] | None = None

    def __post_init__(self) -> None:
        params = tuple((check_string(k, "ID field"), v if v is None else check_string(v, "ID value"))
                       for k, v in self.params or ())
        set_field(self, "params", params or None)


@dataclass(frozen=True, slots=True)
class Fetch:
    """`* n FETCH (item ...)`, items in the order given."""

    number: int
    items: tuple[FetchItem, ...]

    def __post_init__(self) -> None:
        check_number(self.number, "message number", minimum=1)
        if not self.items or not all(isinstance(i, FetchItem) for i in self.items):
            raise ValueError(f"a FETCH response needs one or more FetchItems: {self.items!r}")
        set_field(self, "items", tuple(self.items))


Response = (Tagged | Untagged | Continuation | Capability | Enabled | ListResponse | StatusResponse |
    Search | ESearch | Flags | Exists | Recent | Expunge | Vanished | Namespace | Id | Fetch)

__all__ = [
    "ADDRESS_FIELDS", "MAX_MODSEQ", "MAX_NUMBER", "NUMBER_CODES", "SIMPLE_CODES", "Address", "AppendUidCode",
    "BadCharsetCode", "Capability", "CapabilityCode", "Code", "Continuation", "CopyUidCode", "ESearch",
    "Enabled", "Envelope", "Exists", "Expunge", "Fetch", "FetchBodySection", "FetchBodyStructure",
    "FetchEnvelope", "FetchFlags", "FetchInternalDate", "FetchItem", "FetchModSeq", "FetchRfc822",
    "FetchSize", "FetchUid", "Flags", "Id", "ListResponse", "ModifiedCode", "Namespace", "NamespaceEntry",
    "NumberCode", "PermanentFlagsCode", "Recent", "Response", "ResponseCode", "Search", "StatusResponse",
    "Tagged", "Untagged", "Value", "Vanished", "clean_text", "is_atom", "is_message_rfc822", "leading_parts",
    "normalise_date",
]
