"""An in-memory `MailStorage` and `Authenticator`: the reference model for session and property tests.

One account-wide MODSEQ counter feeds every mailbox, so each mailbox's HIGHESTMODSEQ strictly grows
with every change in it (RFC 7162 only asks for that). The virtual "Starred" mailbox (RFC 6154
\\Flagged) shows every \\Flagged message of the real mailboxes under its own UIDs; flag changes made
through it reach the real message, other writes to it are refused.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from whymail.imap.storage import (
    HIERARCHY_DELIMITER,
    Account,
    AppendResult,
    Changes,
    CopyResult,
    MailboxInfo,
    MessageMeta,
    StorageError,
    StoreMode,
    StoreResult,
)

DEFAULT_MAILBOXES = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Archive", "\\Archive"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)
STARRED = "Starred"
_ids = itertools.count(1)
_uidvalidities = itertools.count(1000)


@dataclass(slots=True)
class _Message:
    uid: int
    flags: frozenset[str]
    modseq: int
    created: int  # MODSEQ at which it arrived in this mailbox
    internal_date: datetime
    data: bytes

    def meta(self) -> MessageMeta:
        return MessageMeta(self.uid, self.flags, self.modseq, self.internal_date, len(self.data))


@dataclass(slots=True)
class _Box:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    highestmodseq: int
    subscribed: bool = True
    uidnext: int = 1
    messages: dict[int, _Message] = field(default_factory=dict)  # insertion order == UID order
    expunged: list[tuple[int, int]] = field(default_factory=list)  # (modseq, uid)


@dataclass(slots=True)
class _Starred:
    """The virtual \\Flagged mailbox: virtual UID <-> (mailbox id, UID)."""

    box: _Box
    by_source: dict[tuple[int, int], int] = field(default_factory=dict)
    by_vuid: dict[int, tuple[int, int]] = field(default_factory=dict)
    added_at: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class _AccountData:
    boxes: dict[str, _Box]
    starred: _Starred
    modseq: int = 1
    changed: asyncio.Event | None = None


class MemoryAuthenticator:
    """Users from a dict of email -> password; user ids in insertion order starting at 1."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {email.lower(): (i, email, pw) for i, (email, pw) in enumerate(users.items(), 1)}
        self.failures = 0

    async def authenticate(self, username: str, password: str, *, remote_ip: str) -> Account | None:
        """The account when the password matches."""
        entry = self._users.get(username.lower())
        if entry is None or entry[2] != password:
            self.failures += 1
            return None
        return Account(entry[0], entry[1])


def _valid_name(name: str) -> bool:
    parts = name.split(HIERARCHY_DELIMITER)
    return bool(name) and all(parts) and len(name) <= 500 and all(ord(ch) >= 0x20 for ch in name)


class MemoryStorage:
    """`MailStorage` kept in dicts; every account gets the default mailboxes on first use."""

    def __init__(self) -> None:
        self._accounts: dict[int, _AccountData] = {}

    # --- internals ----------------------------------------------------------------------------

    def _data(self, account: Account) -> _AccountData:
        data = self._accounts.get(account.user_id)
        if data is None:
            starred = _Starred(_Box(next(_ids), STARRED, "\\Flagged", next(_uidvalidities), 1))
            data = _AccountData({}, starred)
            for name, use in DEFAULT_MAILBOXES:
                data.boxes[name] = _Box(next(_ids), name, use, next(_uidvalidities), 1)
            self._accounts[account.user_id] = data
        return data

    def _bump(self, data: _AccountData) -> int:
        data.modseq += 1
        return data.modseq

    def _changed(self, data: _AccountData) -> None:
        """After a mutation: refresh Starred and wake IDLE waiters."""
        self._refresh_starred(data)
        if data.changed is not None:
            data.changed.set()
            data.changed = None

    def _refresh_starred(self, data: _AccountData) -> None:
        st = data.starred
        current = {
            (box.id, m.uid): m
            for box in data.boxes.values()
            for m in box.messages.values()
            if "\\Flagged" in m.flags
        }
        for key in [k for k in st.by_source if k not in current]:
            vuid = st.by_source.pop(key)
            del st.by_vuid[vuid]
            st.added_at.pop(vuid, None)
            st.box.expunged.append((data.modseq, vuid))
            st.box.highestmodseq = max(st.box.highestmodseq, data.modseq)
        for key in sorted((k for k in current if k not in st.by_source), key=lambda k: (current[k].modseq, k)):
            vuid = st.box.uidnext
            st.box.uidnext += 1
            st.by_source[key] = vuid
            st.by_vuid[vuid] = key
            st.added_at[vuid] = data.modseq
        for m in current.values():
            st.box.highestmodseq = max(st.box.highestmodseq, m.modseq)

    def _box(self, data: _AccountData, name: str) -> _Box:
        if name.upper() == "INBOX":
            name = "INBOX"
        if name == STARRED:
            return data.starred.box
        box = data.boxes.get(name)
        if box is None:
            raise StorageError("NONEXISTENT", f"no mailbox {name!r}")
        return box

    def _box_by_id(self, data: _AccountData, mailbox_id: int) -> _Box:
        if mailbox_id == data.starred.box.id:
            return data.starred.box
        for box in data.boxes.values():
            if box.id == mailbox_id:
                return box
        raise StorageError("NONEXISTENT", "mailbox no longer exists")

    def _starred_messages(self, data: _AccountData) -> list[tuple[int, _Message]]:
        boxes = {box.id: box for box in data.boxes.values()}
        out = []
        for vuid, (box_id, uid) in sorted(data.starred.by_vuid.items()):
            out.append((vuid, boxes[box_id].messages[uid]))
        return out

    def _metas(self, data: _AccountData, box: _Box) -> list[tuple[MessageMeta, int]]:
        """(meta, created modseq) by ascending UID."""
        if box is data.starred.box:
            return [
                (MessageMeta(vuid, m.flags, max(m.modseq, data.starred.added_at[vuid]), m.internal_date,
                             len(m.data)), data.starred.added_at[vuid])
                for vuid, m in self._starred_messages(data)
            ]
        return [(m.meta(), m.created) for m in box.messages.values()]

    def _info(self, data: _AccountData, box: _Box) -> MailboxInfo:
        metas = [meta for meta, _ in self._metas(data, box)]
        return MailboxInfo(
            id=box.id, name=box.name, special_use=box.special_use, subscribed=box.subscribed,
            uidvalidity=box.uidvalidity, uidnext=box.uidnext, highestmodseq=box.highestmodseq,
            messages=len(metas), unseen=sum("\\Seen" not in m.flags for m in metas),
            size=sum(m.size for m in metas),
        )

    def _real_targets(self, data: _AccountData, box: _Box, uids: list[int]) -> list[tuple[_Box, _Message]]:
        """The real messages behind `uids` (the Starred mailbox maps its virtual UIDs)."""
        if box is data.starred.box:
            boxes = {b.id: b for b in data.boxes.values()}
            targets = []
            for uid in uids:
                key = data.starred.by_vuid.get(uid)
                if key is not None:
                    targets.append((boxes[key[0]], boxes[key[0]].messages[key[1]]))
            return targets
        return [(box, box.messages[uid]) for uid in uids if uid in box.messages]

    def _add(self, data: _AccountData, box: _Box, payload: bytes, flags: frozenset[str], when: datetime) -> int:
        modseq = self._bump(data)
        uid = box.uidnext
        box.uidnext += 1
        box.messages[uid] = _Message(uid, flags - {"\\Recent"}, modseq, modseq, when, payload)
        box.highestmodseq = modseq
        return uid

    # --- MailStorage --------------------------------------------------------------------------

    async def list_mailboxes(self, account: Account) -> list[MailboxInfo]:
        """Every mailbox, INBOX first then by name, Starred included."""
        data = self._data(account)
        boxes = sorted(data.boxes.values(), key=lambda b: (b.name != "INBOX", b.name))
        return [self._info(data, box) for box in [*boxes, data.starred.box]]

    async def get_mailbox(self, account: Account, name: str) -> MailboxInfo:
        """One mailbox by name."""
        data = self._data(account)
        return self._info(data, self._box(data, name))

    async def list_messages(self, account: Account, mailbox_id: int) -> list[MessageMeta]:
        """Every message by ascending UID."""
        data = self._data(account)
        return [meta for meta, _ in self._metas(data, self._box_by_id(data, mailbox_id))]

    async def changes_since(self, account: Account, mailbox_id: int, modseq: int) -> Changes:
        """Messages with MODSEQ above `modseq` (new ones in `added`) and UIDs expunged after it."""
        data = self._data(account)
        box = self._box_by_id(data, mailbox_id)
        added, updated = [], []
        for meta, created in self._metas(data, box):
            if meta.modseq > modseq:
                (added if created > modseq else updated).append(meta)
        expunged = tuple(uid for at, uid in box.expunged if at > modseq)
        return Changes(box.highestmodseq, box.uidnext, tuple(added), tuple(updated), expunged)

    async def wait_changes(self, account: Account, mailbox_id: int, modseq: int, timeout: float) -> bool:
        """Wait until HIGHESTMODSEQ passes `modseq`; False on timeout."""
        data = self._data(account)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._box_by_id(data, mailbox_id).highestmodseq <= modseq:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if data.changed is None:
                data.changed = asyncio.Event()
            try:
                await asyncio.wait_for(data.changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def read_message(self, account: Account, mailbox_id: int, uid: int) -> bytes:
        """The raw bytes."""
        data = self._data(account)
        box = self._box_by_id(data, mailbox_id)
        targets = self._real_targets(data, box, [uid])
        if not targets:
            raise StorageError("NONEXISTENT", "message was expunged")
        return targets[0][1].data

    async def store_flags(
        self,
        account: Account,
        mailbox_id: int,
        uids: list[int],
        mode: StoreMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """Change flags; each changed message gets a new MODSEQ."""
        data = self._data(account)
        box = self._box_by_id(data, mailbox_id)
        virtual = box is data.starred.box
        flags = flags - {"\\Recent"}
        modified: list[int] = []
        changed_uids: list[int] = []
        last_state: dict[int, MessageMeta] = {}
        for uid in uids:
            targets = self._real_targets(data, box, [uid])
            if not targets:
                continue
            real_box, msg = targets[0]
            current_modseq = msg.modseq
            if virtual:
                current_modseq = max(current_modseq, data.starred.added_at[uid])
            if unchanged_since is not None and current_modseq > unchanged_since:
                modified.append(uid)
                continue
            if mode is StoreMode.ADD:
                new = msg.flags | flags
            elif mode is StoreMode.REMOVE:
                new = msg.flags - flags
            else:
                new = flags
            if new == msg.flags:
                continue
            msg.flags = new
            msg.modseq = self._bump(data)
            real_box.highestmodseq = msg.modseq
            changed_uids.append(uid)
            last_state[uid] = MessageMeta(uid, new, msg.modseq, msg.internal_date, len(msg.data))
        self._changed(data)
        metas = {meta.uid: meta for meta, _ in self._metas(data, box)}
        if virtual:  # a message unflagged through Starred left it: report its last state
            for uid in changed_uids:
                metas.setdefault(uid, last_state[uid])
        return StoreResult(tuple(metas[uid] for uid in changed_uids), tuple(modified))

    async def expunge(self, account: Account, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (only among `uids` when given)."""
        data = self._data(account)
        box = self._box_by_id(data, mailbox_id)
        if box is data.starred.box:
            return []
        wanted = None if uids is None else set(uids)
        gone = [
            uid for uid, m in box.messages.items()
            if "\\Deleted" in m.flags and (wanted is None or uid in wanted)
        ]
        if gone:
            modseq = self._bump(data)
            for uid in gone:
                del box.messages[uid]
                box.expunged.append((modseq, uid))
            box.highestmodseq = modseq
            self._changed(data)
        return gone

    async def copy(self, account: Account, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        """Copy in UID order; TRYCREATE when `dest` does not exist."""
        data = self._data(account)
        box = self._box_by_id(data, mailbox_id)
        try:
            target = self._box(data, dest)
        except StorageError:
            raise StorageError("TRYCREATE", f"no mailbox {dest!r}") from None
        if target is data.starred.box:
            raise StorageError("CANNOT", "Starred is a virtual mailbox")
        sources, dests = [], []
        for uid in sorted(uids):
            found = self._real_targets(data, box, [uid])
            if not found:
                continue
            msg = found[0][1]
            sources.append(uid)
            dests.append(self._add(data, target, msg.data, msg.flags, msg.internal_date))
        self._changed(data)
        return CopyResult(target.uidvalidity, tuple(sources), tuple(dests))

    async def move(self, account: Account, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        """Copy, then expunge the sources."""
        data = self._data(account)
        box = self._box_by_id(data, mailbox_id)
        if box is data.starred.box:
            raise StorageError("CANNOT", "cannot move out of the virtual Starred mailbox")
        result = await self.copy(account, mailbox_id, uids, dest)
        if result.source_uids:
            modseq = self._bump(data)
            for uid in result.source_uids:
                del box.messages[uid]
                box.expunged.append((modseq, uid))
            box.highestmodseq = modseq
            self._changed(data)
        return result

    async def append(
        self, account: Account, mailbox: str, data: bytes, flags: frozenset[str], internal_date: datetime | None
    ) -> AppendResult:
        """Store a new message; TRYCREATE when the mailbox does not exist."""
        acct = self._data(account)
        try:
            box = self._box(acct, mailbox)
        except StorageError:
            raise StorageError("TRYCREATE", f"no mailbox {mailbox!r}") from None
        if box is acct.starred.box:
            raise StorageError("CANNOT", "Starred is a virtual mailbox")
        when = internal_date or datetime.now(UTC).replace(microsecond=0)
        uid = self._add(acct, box, data, flags, when)
        self._changed(acct)
        return AppendResult(box.uidvalidity, uid)

    async def create_mailbox(self, account: Account, name: str, special_use: str | None = None) -> None:
        """Create with missing parents."""
        data = self._data(account)
        name = name.rstrip(HIERARCHY_DELIMITER)  # RFC 3501 §6.3.3: a trailing delimiter is a hint
        if name.upper() == "INBOX" or name in data.boxes or name == STARRED:
            raise StorageError("ALREADYEXISTS", "mailbox already exists")
        if not _valid_name(name):
            raise StorageError("CANNOT", "invalid mailbox name")
        parts = name.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(parts) + 1):
            partial = HIERARCHY_DELIMITER.join(parts[:depth])
            if partial not in data.boxes:
                use = special_use if depth == len(parts) else None
                data.boxes[partial] = _Box(next(_ids), partial, use, next(_uidvalidities), data.modseq)

    async def delete_mailbox(self, account: Account, name: str) -> None:
        """Delete one mailbox; its children stay."""
        data = self._data(account)
        box = self._box(data, name)
        if box.name == "INBOX" or box is data.starred.box:
            raise StorageError("CANNOT", f"{box.name} cannot be deleted")
        del data.boxes[box.name]
        self._changed(data)

    async def rename_mailbox(self, account: Account, old: str, new: str) -> None:
        """Rename with children; INBOX's messages move to `new` and INBOX stays."""
        data = self._data(account)
        box = self._box(data, old)
        if box is data.starred.box:
            raise StorageError("CANNOT", "Starred cannot be renamed")
        if new.upper() == "INBOX" or new in data.boxes or new == STARRED:
            raise StorageError("ALREADYEXISTS", "target mailbox already exists")
        if not _valid_name(new) or new.startswith(box.name + HIERARCHY_DELIMITER):
            raise StorageError("CANNOT", "invalid mailbox name")
        if box.name == "INBOX":
            await self.create_mailbox(account, new)
            target = data.boxes[new]
            for msg in list(box.messages.values()):
                self._add(data, target, msg.data, msg.flags, msg.internal_date)
            if box.messages:
                modseq = self._bump(data)
                box.expunged.extend((modseq, uid) for uid in box.messages)
                box.messages.clear()
                box.highestmodseq = modseq
            self._changed(data)
            return
        old_name = box.name
        prefix = old_name + HIERARCHY_DELIMITER
        for name in [n for n in data.boxes if n == old_name or n.startswith(prefix)]:
            moved = data.boxes.pop(name)
            moved.name = new + name[len(old_name):]
            data.boxes[moved.name] = moved
        parent = new.rpartition(HIERARCHY_DELIMITER)[0]
        if parent and parent not in data.boxes:
            await self.create_mailbox(account, parent)
        self._changed(data)

    async def set_subscribed(self, account: Account, name: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE."""
        data = self._data(account)
        self._box(data, name).subscribed = subscribed
