"""The events a browser sees on `GET /ws`: built by the MailboxShard after a commit, numbered by the
NotificationHub, sent to the user's sockets as `{"id", "type", "data", "ts"}`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NEW_MESSAGE = "new_message"
MESSAGE_UPDATED = "message_updated"
FOLDER_COUNT = "folder_count"
NOTIFICATION = "notification"


class LiveEvent(BaseModel):
    """One change for one user. `id` is 0 until the hub numbers it (ids only grow)."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)
    id: int = 0

    def wire(self) -> dict[str, Any]:
        """The JSON object sent to the client (the user id is implied by the socket)."""
        return {"id": self.id, "type": self.type, "data": self.data, "ts": self.ts}


def new_message(
    user_id: int, mailbox_id: int, mailbox: str, uid: int, *, message_id: str, subject: str, from_addr: str,
    source: str = "delivery",
) -> LiveEvent:
    """A message arrived in a mailbox; `source` is "delivery" (SMTP/local) or "append" (IMAP/API)."""
    return LiveEvent(user_id=user_id, type=NEW_MESSAGE, data={
        "mailbox_id": mailbox_id, "mailbox": mailbox, "uid": uid, "message_id": message_id,
        "subject": subject, "from": from_addr, "source": source,
    })


def flags_changed(user_id: int, mailbox_id: int, changes: Iterable[tuple[int, Iterable[str]]]) -> LiveEvent:
    """Flags of some messages changed: `changes` is (uid, new flags) pairs."""
    return LiveEvent(user_id=user_id, type=MESSAGE_UPDATED, data={
        "action": "flags", "mailbox_id": mailbox_id,
        "messages": [{"uid": uid, "flags": sorted(flags)} for uid, flags in changes],
    })


def expunged(user_id: int, mailbox_id: int, uids: Iterable[int]) -> LiveEvent:
    """Messages were removed from a mailbox for good."""
    return LiveEvent(user_id=user_id, type=MESSAGE_UPDATED, data={
        "action": "expunged", "mailbox_id": mailbox_id, "uids": list(uids),
    })


def moved(
    user_id: int, mailbox_id: int, uids: Iterable[int], to_mailbox_id: int, to_mailbox: str, new_uids: Iterable[int]
) -> LiveEvent:
    """Messages left `mailbox_id` for another mailbox, where they have new UIDs (same order)."""
    return LiveEvent(user_id=user_id, type=MESSAGE_UPDATED, data={
        "action": "moved", "mailbox_id": mailbox_id, "uids": list(uids),
        "to_mailbox_id": to_mailbox_id, "to_mailbox": to_mailbox, "new_uids": list(new_uids),
    })


def folder_count(user_id: int, mailbox_id: int, mailbox: str, total: int, unread: int) -> LiveEvent:
    """The counters of a mailbox after a change."""
    return LiveEvent(user_id=user_id, type=FOLDER_COUNT, data={
        "mailbox_id": mailbox_id, "mailbox": mailbox, "total": total, "unread": unread,
    })
