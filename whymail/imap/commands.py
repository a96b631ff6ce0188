"""Typed IMAP commands (RFC 3501 §6 and the extensions we serve), as produced by the parser.

Every command carries the client's `tag`. Mailbox names are decoded from modified UTF-7 and `INBOX`
is normalised to upper case; keywords such as status items or capabilities are upper-cased.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from whymail.imap.fetchitems import FetchItem
from whymail.imap.searchkeys import SearchKey
from whymail.imap.sequence import SequenceSet

STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "DELETED"}
)
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})  # RFC 4731, RFC 5182


# --- any state (RFC 3501 §6.1) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class Id:
    """RFC 2971: `parameters` is None for `ID NIL`, else (field, value-or-None) pairs."""

    tag: str
    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Enable:
    """RFC 5161: capability names, upper-cased."""

    tag: str
    capabilities: tuple[str, ...]


# --- not authenticated (RFC 3501 §6.2) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTls:
    tag: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """`mechanism` upper-cased; `initial_response` is the RFC 4959 SASL-IR base64 text or "="."""

    tag: str
    mechanism: str
    initial_response: str | None = None


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: str
    password: str


# --- authenticated (RFC 3501 §6.3) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """RFC 7162 §3.2.5: `(QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]))`."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (known sequence set, known uid set)


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT, or EXAMINE when `read_only`; optional CONDSTORE / QRESYNC select parameters."""

    tag: str
    mailbox: str
    read_only: bool = False
    condstore: bool = False
    qresync: QresyncParams | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """`special_use` holds RFC 6154 `USE (\\Sent ...)` attributes."""

    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST, basic or RFC 5258 extended; options are upper-cased atoms.

    `selection` e.g. ("SUBSCRIBED",), `returns` e.g. ("SPECIAL-USE", "CHILDREN"), and
    `return_status` the RFC 5819 `RETURN (STATUS (...))` items or None.
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    return_status: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Lsub:
    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status:
    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (several with RFC 3502 MULTIAPPEND)."""

    flags: tuple[str, ...]
    internal_date: dt.datetime | None  # timezone-aware
    data: bytes


@dataclass(frozen=True, slots=True)
class Append:
    tag: str
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Idle:
    """RFC 2177; the gateway then reads `DONE` with `CommandReader.expect_idle_done()`."""

    tag: str


# --- selected (RFC 3501 §6.4) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    tag: str


@dataclass(frozen=True, slots=True)
class UidExpunge:
    """RFC 4315: expunge only the \\Deleted messages whose UIDs are in the set."""

    tag: str
    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH. `return_options` is None without RETURN, () for `RETURN ()` (= ALL)."""

    tag: str
    key: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH; macros (ALL/FAST/FULL) arrive expanded in `items`."""

    tag: str
    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    uid: bool = False
    changed_since: int | None = None  # RFC 7162 CHANGEDSINCE
    vanished: bool = False  # RFC 7162 §3.2.6, UID FETCH only


@dataclass(frozen=True, slots=True)
class Store:
    """STORE / UID STORE: `mode` is "+" (add), "-" (remove) or "" (replace)."""

    tag: str
    sequence_set: SequenceSet
    mode: str
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None  # RFC 7162 UNCHANGEDSINCE
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """RFC 6851 MOVE / UID MOVE."""

    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


Command = (
    Capability | Noop | Logout | Id | Enable | StartTls | Authenticate | Login | Select | Create
    | Delete | Rename | Subscribe | Unsubscribe | List | Lsub | Status | Append | Namespace | Idle
    | Check | Close | Unselect | Expunge | UidExpunge | Search | Fetch | Store | Copy | Move
)
