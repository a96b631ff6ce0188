"""Selected-state commands (RFC 3501 §6.4): CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE, SEARCH, FETCH,
STORE, COPY and MOVE, with RFC 4315 UIDPLUS, RFC 6851 MOVE and RFC 7162 CONDSTORE."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from whymail.imap import commands as c
from whymail.imap import fetch_eval, search_eval
from whymail.imap.errors import CommandError
from whymail.imap.fetch_data import FetchFlags, FetchModSeq, FetchUid
from whymail.imap.fetchitems import FetchAttr
from whymail.imap.responses import (
    BadCharsetCode,
    Code,
    CopyUidCode,
    ESearch,
    Fetch,
    ModifiedCode,
    Response,
    Search,
    Tagged,
    Untagged,
)
from whymail.imap.storage import StorageError, StoreMode
from whymail.imap.view import MailboxView, format_set

if TYPE_CHECKING:
    from whymail.imap.session import Session


async def handle(s: Session, cmd: c.Command) -> list[Response]:
    """Run one selected-state command."""
    handler = _HANDLERS.get(type(cmd))
    if handler is None:
        raise CommandError("BAD", "unknown command")
    return await handler(s, cmd)


def _view(s: Session) -> MailboxView:
    assert s.view is not None
    return s.view


def _writable(view: MailboxView) -> None:
    if view.read_only:
        raise CommandError("NO", "mailbox is read-only", Code("READ-ONLY"))


async def close(s: Session, cmd: c.Close | c.Unselect) -> list[Response]:
    """CLOSE expunges silently (RFC 3501 §6.4.2); UNSELECT does not (RFC 3691)."""
    from whymail.imap.session import State

    view = _view(s)
    if isinstance(cmd, c.Close) and not view.read_only:
        try:
            await s.storage.expunge(s._account(), view.mailbox_id)
        except StorageError as err:
            if err.code != "CANNOT":  # e.g. the virtual Starred mailbox: nothing to expunge, CLOSE still closes
                raise
    s.view = None
    s.state = State.AUTHENTICATED
    return [Tagged(cmd.tag, "OK", f"{type(cmd).__name__.upper()} completed")]


async def expunge(s: Session, cmd: c.Expunge | c.UidExpunge) -> list[Response]:
    """EXPUNGE / UID EXPUNGE: one untagged EXPUNGE per removed message (RFC 3501 §7.4.1)."""
    view = _view(s)
    _writable(view)
    uids = None
    if isinstance(cmd, c.UidExpunge):
        uids = [uid for _, uid in view.resolve(cmd.sequence_set, uid=True)]
        if not uids:
            return [Tagged(cmd.tag, "OK", "UID EXPUNGE completed")]
    gone = await s.storage.expunge(s._account(), view.mailbox_id, uids)
    name = "UID EXPUNGE" if uids is not None else "EXPUNGE"
    return [*view.remove(gone), Tagged(cmd.tag, "OK", f"{name} completed")]


async def search(s: Session, cmd: c.Search) -> list[Response]:
    """SEARCH / UID SEARCH (RFC 3501 §6.4.4), ESEARCH-style RETURN options (RFC 4731)."""
    view = _view(s)
    if cmd.charset is not None and cmd.charset.upper() not in search_eval.SUPPORTED_CHARSETS:
        raise CommandError("NO", "unsupported charset", BadCharsetCode(tuple(sorted(search_eval.SUPPORTED_CHARSETS))))
    with_modseq = search_eval.uses_modseq(cmd.key)
    if with_modseq:
        s.condstore = True
    need_text = search_eval.needs_message(cmd.key)
    last_uid = view.uids[-1] if view.uids else 0
    hits: list[int] = []
    highest = 0
    for seq, uid in enumerate(list(view.uids), 1):
        if seq % 256 == 0:
            await asyncio.sleep(0)  # a large SEARCH must not stall every other session of the gateway
        meta = view.metas[uid]
        target = search_eval.SearchTarget(seq, meta, len(view.uids), last_uid)
        if need_text:
            try:
                raw = await s.storage.read_message(s._account(), view.mailbox_id, uid)
            except StorageError:
                continue  # expunged by another session, not yet announced
            target.text = search_eval.MessageText(raw)
        if search_eval.matches(cmd.key, target):
            hits.append(uid if cmd.uid else seq)
            highest = max(highest, meta.modseq)
    modseq = highest if with_modseq and hits else None
    if cmd.return_options is not None:
        options = set(cmd.return_options) or {"ALL"}
        result: Response = ESearch(
            tag=cmd.tag,
            uid=cmd.uid,
            min=min(hits) if hits and "MIN" in options else None,
            max=max(hits) if hits and "MAX" in options else None,
            all=format_set(hits) if hits and "ALL" in options else None,
            count=len(hits) if "COUNT" in options else None,
            modseq=modseq,
        )
    else:
        result = Search(tuple(hits), modseq)
    return [result, Tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}SEARCH completed")]


async def fetch(s: Session, cmd: c.Fetch) -> list[Response]:
    """FETCH / UID FETCH (RFC 3501 §6.4.5), CHANGEDSINCE (RFC 7162 §3.1.4)."""
    view = _view(s)
    targets = view.resolve(cmd.sequence_set, cmd.uid)
    items = cmd.items
    names = {item.name for item in items if isinstance(item, FetchAttr)}
    if cmd.uid and "UID" not in names:
        items = (FetchAttr("UID"), *items)  # RFC 3501 §6.4.8
    if cmd.changed_since is not None or "MODSEQ" in names:
        s.condstore = True
        if "MODSEQ" not in names:
            items = (*items, FetchAttr("MODSEQ"))
    if cmd.changed_since is not None:
        targets = [(seq, uid) for seq, uid in targets if view.metas[uid].modseq > cmd.changed_since]
    account = s._account()
    newly_seen: set[int] = set()
    if fetch_eval.sets_seen(items) and not view.read_only:
        unseen = [uid for _, uid in targets if "\\Seen" not in view.metas[uid].flags]
        if unseen:
            result = await s.storage.store_flags(account, view.mailbox_id, unseen, StoreMode.ADD,
                                                 frozenset({"\\Seen"}))
            for meta in result.changed:
                view.update_meta(meta)
                newly_seen.add(meta.uid)
    need_message = fetch_eval.needs_message(items)
    out: list[Response] = []
    missing = False
    for seq, uid in targets:
        meta = view.metas[uid]
        message = None
        if need_message:
            try:
                message = fetch_eval.MessageData(await s.storage.read_message(account, view.mailbox_id, uid))
            except StorageError:
                missing = True  # RFC 2180 §4.1.2: expunged elsewhere, not announced yet
                continue
        data = fetch_eval.fetch_items(items, meta, message)
        if uid in newly_seen and "FLAGS" not in names:
            data.append(FetchFlags(fetch_eval.sorted_flags(meta.flags)))
        out.append(Fetch(seq, tuple(data)))
    name = f"{'UID ' if cmd.uid else ''}FETCH"
    if missing:
        out.append(Tagged(cmd.tag, "NO", "some messages were expunged", Code("EXPUNGEISSUED")))
    else:
        out.append(Tagged(cmd.tag, "OK", f"{name} completed"))
    return out


async def store(s: Session, cmd: c.Store) -> list[Response]:
    """STORE / UID STORE (RFC 3501 §6.4.6), UNCHANGEDSINCE → [MODIFIED] (RFC 7162 §3.1.3)."""
    view = _view(s)
    _writable(view)
    targets = view.resolve(cmd.sequence_set, cmd.uid)
    if cmd.unchanged_since is not None:
        s.condstore = True
    flags = frozenset(f for f in cmd.flags if f != "\\Recent")
    result = await s.storage.store_flags(
        s._account(), view.mailbox_id, [uid for _, uid in targets], StoreMode(cmd.mode), flags,
        cmd.unchanged_since,
    )
    changed = {meta.uid for meta in result.changed}
    for meta in result.changed:
        view.update_meta(meta)
    modified = set(result.modified)
    out: list[Response] = []
    for seq, uid in targets:
        if uid in modified or uid not in view.metas:
            continue
        meta = view.metas[uid]
        items: list = []
        if cmd.uid:
            items.append(FetchUid(uid))
        if not cmd.silent:
            items.append(FetchFlags(fetch_eval.sorted_flags(meta.flags)))
        if s.condstore and (not cmd.silent or uid in changed):
            items.append(FetchModSeq(max(meta.modseq, 1)))
        if cmd.silent and not (s.condstore and uid in changed):
            continue
        out.append(Fetch(seq, tuple(items)))
    code = None
    if modified:
        numbers = sorted(modified) if cmd.uid else [seq for seq, uid in targets if uid in modified]
        code = ModifiedCode(format_set(numbers))
    out.append(Tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}STORE completed", code))
    return out


async def copy_or_move(s: Session, cmd: c.Copy | c.Move) -> list[Response]:
    """COPY / MOVE and UID variants with [COPYUID] (RFC 4315 §3, RFC 6851 §4.3)."""
    view = _view(s)
    is_move = isinstance(cmd, c.Move)
    if is_move:
        _writable(view)
    targets = view.resolve(cmd.sequence_set, cmd.uid)
    name = f"{'UID ' if cmd.uid else ''}{'MOVE' if is_move else 'COPY'}"
    uids = [uid for _, uid in targets if uid not in view.pending_expunge]
    if not uids:
        return [Tagged(cmd.tag, "OK", f"{name} completed (no messages)")]
    account = s._account()
    if is_move:
        result = await s.storage.move(account, view.mailbox_id, uids, cmd.mailbox)
    else:
        result = await s.storage.copy(account, view.mailbox_id, uids, cmd.mailbox)
    code = None
    if result.source_uids:
        code = CopyUidCode(result.uidvalidity, _pairs(result.source_uids), _pairs(result.dest_uids))
    if not is_move:
        return [Tagged(cmd.tag, "OK", f"{name} completed", code)]
    out: list[Response] = []
    if code is not None:
        out.append(Untagged("OK", "moved", code))
    out.extend(view.remove(result.source_uids))
    out.append(Tagged(cmd.tag, "OK", f"{name} completed"))
    return out


def _pairs(uids: tuple[int, ...]) -> str:
    """A UID set that keeps the source/destination correspondence: ranges only when consecutive in order."""
    ranges: list[str] = []
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        ranges.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(ranges)


_HANDLERS = {
    c.Close: close,
    c.Unselect: close,
    c.Expunge: expunge,
    c.UidExpunge: expunge,
    c.Search: search,
    c.Fetch: fetch,
    c.Store: store,
    c.Copy: copy_or_move,
    c.Move: copy_or_move,
}
