"""What the IMAP session needs from the mail store: the storage interface (no sockets, no Ray).

The sans-I/O `Session` talks only to `MailStorage`. Two implementations exist or will exist:
`whymail.imap.memory.MemoryStorage` (a reference model, used by unit and property tests) and the
PostgreSQL/Maildir one used by the IMAP gateway (reads straight from PostgreSQL and Maildir, writes
through the owning MailboxShard, as DESIGN.md describes).

Every method is scoped to one authenticated `Account`: an implementation must never let a session
see or touch another user's mailboxes. Mailbox names are IMAP names (str, '/' hierarchy, INBOX
upper-case), already decoded from modified UTF-7. Errors are `StorageError` with an RFC 5530 code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

HIERARCHY_DELIMITER = "/"
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})


class StorageError(Exception):
    """A refusal the session turns into `NO [code] text` (RFC 5530 codes)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code  # e.g. NONEXISTENT, ALREADYEXISTS, TRYCREATE, OVERQUOTA, CANNOT, NOPERM, LIMIT
        self.text = text

    def __reduce__(self):
        # Raised in a MailboxShard and re-raised in a gateway: Ray pickles it with its two arguments.
        return (StorageError, (self.code, self.text))


@dataclass(frozen=True, slots=True)
class Account:
    user_id: int
    email: str


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """One mailbox as LIST/STATUS/SELECT see it."""

    id: int
    name: str
    special_use: str | None  # "\\Sent", "\\Drafts", "\\Archive", "\\Trash", "\\Junk", "\\Flagged" (virtual)
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a session keeps per message of the selected mailbox."""

    uid: int
    flags: frozenset[str]
    modseq: int
    internal_date: datetime
    size: int


@dataclass(frozen=True, slots=True)
class Changes:
    """What happened in a mailbox after `since` (a MODSEQ): the mechanism behind untagged updates.

    `added` and `updated` are messages whose MODSEQ is above `since` (new ones have UID >= the
    session's known UIDNEXT); `expunged` are UIDs expunged after `since` (RFC 7162 §3.2.10 VANISHED).
    """

    highestmodseq: int
    uidnext: int
    added: tuple[MessageMeta, ...]
    updated: tuple[MessageMeta, ...]
    expunged: tuple[int, ...]


class StoreMode(Enum):
    ADD = "+"
    REMOVE = "-"
    REPLACE = ""


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Messages whose flags changed (with new flags and MODSEQ), and UIDs refused by UNCHANGEDSINCE."""

    changed: tuple[MessageMeta, ...]
    modified: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyResult:
    """RFC 4315 COPYUID: destination UIDVALIDITY and the source/destination UID pairs, in order."""

    uidvalidity: int
    source_uids: tuple[int, ...]
    dest_uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """RFC 4315 APPENDUID."""

    uidvalidity: int
    uid: int


class Authenticator(Protocol):
    async def authenticate(self, username: str, password: str, *, remote_ip: str) -> Account | None:
        """The account for these credentials, or None (the caller delays and counts failures)."""


class MailStorage(Protocol):
    async def list_mailboxes(self, account: Account) -> list[MailboxInfo]:
        """Every mailbox of the account (the virtual Starred one included)."""

    async def get_mailbox(self, account: Account, name: str) -> MailboxInfo:
        """One mailbox by name; StorageError("NONEXISTENT") when there is none."""

    async def list_messages(self, account: Account, mailbox_id: int) -> list[MessageMeta]:
        """Every message of the mailbox, by ascending UID (the snapshot SELECT starts from)."""

    async def changes_since(self, account: Account, mailbox_id: int, modseq: int) -> Changes:
        """What changed after `modseq` (cheap when nothing did)."""

    async def wait_changes(self, account: Account, mailbox_id: int, modseq: int, timeout: float) -> bool:
        """Wait (IDLE) until the mailbox's HIGHESTMODSEQ passes `modseq`; False on timeout."""

    async def read_message(self, account: Account, mailbox_id: int, uid: int) -> bytes:
        """The raw message (immutable once stored); StorageError("NONEXISTENT") if expunged."""

    async def store_flags(
        self,
        account: Account,
        mailbox_id: int,
        uids: list[int],
        mode: StoreMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """Change flags; every changed message gets a new MODSEQ (RFC 7162)."""

    async def expunge(self, account: Account, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (only those in `uids` when given: UID EXPUNGE); returns their UIDs."""

    async def copy(self, account: Account, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        """Copy to `dest` (StorageError("TRYCREATE") when it does not exist; "OVERQUOTA")."""

    async def move(self, account: Account, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        """Copy + expunge from the source, atomically (RFC 6851)."""

    async def append(
        self, account: Account, mailbox: str, data: bytes, flags: frozenset[str], internal_date: datetime | None
    ) -> AppendResult:
        """Store a new message (StorageError("TRYCREATE"), "OVERQUOTA")."""

    async def create_mailbox(self, account: Account, name: str, special_use: str | None = None) -> None:
        """Create (with missing parents); StorageError("ALREADYEXISTS"), ("CANNOT") for bad names."""

    async def delete_mailbox(self, account: Account, name: str) -> None:
        """Delete (INBOX cannot be; a mailbox with children keeps them, RFC 3501 §6.3.4)."""

    async def rename_mailbox(self, account: Account, old: str, new: str) -> None:
        """Rename with children; renaming INBOX moves its messages to `new` (RFC 3501 §6.3.5)."""

    async def set_subscribed(self, account: Account, name: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE."""
