"""Authenticated-state commands on mailboxes (RFC 3501 §6.3): SELECT/EXAMINE, CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND (with RFC 4315 APPENDUID)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from whymail.imap import commands as c
from whymail.imap.errors import CommandError
from whymail.imap.fetch_eval import sorted_flags
from whymail.imap.listing import list_responses
from whymail.imap.responses import (
    AppendUidCode,
    Code,
    Exists,
    Flags,
    NumberCode,
    PermanentFlagsCode,
    Recent,
    Response,
    StatusResponse,
    Tagged,
    Untagged,
)
from whymail.imap.storage import SYSTEM_FLAGS, MailboxInfo, StorageError
from whymail.imap.utf7 import encode_mailbox
from whymail.imap.view import MailboxView, format_set

if TYPE_CHECKING:
    from whymail.imap.session import Session

SYSTEM_FLAG_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


async def handle(s: Session, cmd: c.Command) -> list[Response]:
    """Run one mailbox command."""
    if isinstance(cmd, c.Select):
        return await select(s, cmd)
    if isinstance(cmd, c.List | c.Lsub):
        return await list_mailboxes(s, cmd)
    if isinstance(cmd, c.Status):
        return await status(s, cmd)
    if isinstance(cmd, c.Append):
        return await append(s, cmd)
    account = s._account()
    if isinstance(cmd, c.Create):
        if cmd.mailbox.upper() == "INBOX":
            raise CommandError("NO", "INBOX already exists", Code("ALREADYEXISTS"))
        await s.storage.create_mailbox(account, cmd.mailbox, cmd.special_use[0] if cmd.special_use else None)
    elif isinstance(cmd, c.Delete):
        if s.view is not None and s.view.info.name == cmd.mailbox.rstrip("/"):
            raise CommandError("NO", "cannot delete the selected mailbox", Code("INUSE"))
        await s.storage.delete_mailbox(account, cmd.mailbox)
    elif isinstance(cmd, c.Rename):
        await s.storage.rename_mailbox(account, cmd.mailbox, cmd.new_name)
    elif isinstance(cmd, c.Subscribe | c.Unsubscribe):
        await s.storage.set_subscribed(account, cmd.mailbox, isinstance(cmd, c.Subscribe))
    else:
        raise CommandError("BAD", "unknown command")
    return [Tagged(cmd.tag, "OK", f"{type(cmd).__name__.upper()} completed")]


async def select(s: Session, cmd: c.Select) -> list[Response]:
    """SELECT / EXAMINE (RFC 3501 §6.3.1-2, RFC 7162 §3.1.8 CONDSTORE parameter)."""
    from whymail.imap.session import State

    out: list[Response] = []
    if s.view is not None:
        out.append(Untagged("OK", "previous mailbox closed", Code("CLOSED")))  # RFC 7162 §3.2.11
    s.view = None
    s.state = State.AUTHENTICATED  # a failed SELECT leaves no mailbox selected
    if cmd.condstore:
        s.condstore = True
    account = s._account()
    try:
        info = await s.storage.get_mailbox(account, cmd.mailbox)
        metas = await s.storage.list_messages(account, info.id)
    except StorageError as err:
        return [*out, Tagged(cmd.tag, "NO", err.text, Code(err.code))]
    view = MailboxView(info, metas, cmd.read_only)
    keywords = sorted({f for m in metas for f in m.flags if f not in SYSTEM_FLAGS})
    out.append(Flags((*SYSTEM_FLAG_ORDER, *keywords)))
    out.append(Exists(len(metas)))
    out.append(Recent(0))
    first_unseen = next((i for i, m in enumerate(metas, 1) if "\\Seen" not in m.flags), None)
    if first_unseen is not None:
        out.append(Untagged("OK", f"message {first_unseen} is first unseen", NumberCode("UNSEEN", first_unseen)))
    out.append(Untagged("OK", "UIDs valid", NumberCode("UIDVALIDITY", info.uidvalidity)))
    out.append(Untagged("OK", "predicted next UID", NumberCode("UIDNEXT", info.uidnext)))
    permanent = () if cmd.read_only else (*SYSTEM_FLAG_ORDER, "\\*")
    out.append(Untagged("OK", "flags permitted", PermanentFlagsCode(permanent)))
    out.append(Untagged("OK", "highest", NumberCode("HIGHESTMODSEQ", max(info.highestmodseq, 1))))
    s.view = view
    s.state = State.SELECTED
    code = Code("READ-ONLY") if cmd.read_only else Code("READ-WRITE")
    out.append(Tagged(cmd.tag, "OK", f"{'EXAMINE' if cmd.read_only else 'SELECT'} completed", code))
    return out


async def list_mailboxes(s: Session, cmd: c.List | c.Lsub) -> list[Response]:
    """LIST (basic and RFC 5258 extended, RFC 5819 RETURN STATUS) and LSUB."""
    boxes = await s.storage.list_mailboxes(s._account())
    if isinstance(cmd, c.Lsub):
        found, _ = list_responses(boxes, cmd.reference, (cmd.pattern,), command="LSUB")
        return [*found, Tagged(cmd.tag, "OK", "LSUB completed")]
    found, matched = list_responses(
        boxes, cmd.reference, cmd.patterns, selection=cmd.selection, returns=cmd.returns
    )
    out: list[Response] = []
    for response, box in zip(found, matched, strict=False):
        out.append(response)
        if cmd.return_status:
            out.append(_status_response(box, cmd.return_status))
    out.extend(found[len(matched):])  # `LIST "" ""` and \Noselect parents name no stored mailbox
    return [*out, Tagged(cmd.tag, "OK", "LIST completed")]


def _status_response(info: MailboxInfo, items: tuple[str, ...], deleted: int = 0) -> StatusResponse:
    values = {
        "MESSAGES": info.messages,
        "RECENT": 0,
        "UIDNEXT": info.uidnext,
        "UIDVALIDITY": info.uidvalidity,
        "UNSEEN": info.unseen,
        "HIGHESTMODSEQ": max(info.highestmodseq, 1),
        "SIZE": info.size,
        "DELETED": deleted,
    }
    return StatusResponse(encode_mailbox(info.name), tuple((item, values[item]) for item in items if item in values))


async def status(s: Session, cmd: c.Status) -> list[Response]:
    """STATUS (RFC 3501 §6.3.10, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE)."""
    account = s._account()
    info = await s.storage.get_mailbox(account, cmd.mailbox)
    deleted = 0
    if "DELETED" in cmd.items:
        metas = await s.storage.list_messages(account, info.id)
        deleted = sum("\\Deleted" in m.flags for m in metas)
    if "HIGHESTMODSEQ" in cmd.items:
        s.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    return [_status_response(info, cmd.items, deleted), Tagged(cmd.tag, "OK", "STATUS completed")]


async def append(s: Session, cmd: c.Append) -> list[Response]:
    """APPEND, one or more messages; tagged OK [APPENDUID] (RFC 4315)."""
    account = s._account()
    uids: list[int] = []
    uidvalidity = 0
    for message in cmd.messages:
        flags = frozenset(f for f in message.flags if f != "\\Recent")
        unknown = {f for f in flags if f.startswith("\\") and f not in SYSTEM_FLAGS}
        if unknown:
            raise CommandError("BAD", f"unknown system flag {sorted_flags(frozenset(unknown))[0]}")
        result = await s.storage.append(account, cmd.mailbox, message.data, flags, message.internal_date)
        uidvalidity = result.uidvalidity
        uids.append(result.uid)
    if not uids:
        raise CommandError("BAD", "APPEND needs a message")
    return [Tagged(cmd.tag, "OK", "APPEND completed", AppendUidCode(uidvalidity, format_set(uids)))]
