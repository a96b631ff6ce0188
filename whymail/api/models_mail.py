"""Request and response bodies of the mail endpoints (mailboxes, messages, sending)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from whymail.api.models import _In
from whymail.mime.compose import is_address, is_message_id

KEYWORD_PATTERN = r"^[^(){ %*\"\\\]\x00-\x20\x7f-\U0010ffff]{1,100}$"  # an IMAP atom, ASCII only


class MailboxOut(BaseModel):
    id: int
    name: str
    special_use: str | None = None
    subscribed: bool = True
    total: int
    unread: int
    size: int


class MailboxIn(_In):
    name: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")


class MessageListQuery(_In):
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=200)
    sort: Literal["date_desc", "date_asc"] = "date_desc"
    unread: bool | None = None
    flagged: bool | None = None
    has_attachment: bool | None = None
    sender: str | None = Field(None, max_length=200, description="From contains (case-insensitive)")
    subject: str | None = Field(None, max_length=200, description="Subject contains (case-insensitive)")
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class MessageSummaryOut(BaseModel):
    id: int
    mailbox_id: int
    uid: int
    subject: str
    from_addr: str
    to_addrs: str
    cc_addrs: str
    date: dt.datetime | None
    received_at: dt.datetime
    size: int
    seen: bool
    flagged: bool
    answered: bool
    draft: bool
    keywords: list[str]
    has_attachments: bool
    message_id: str | None
    preview: str = ""


class MessagePage(BaseModel):
    messages: list[MessageSummaryOut]
    next_cursor: str | None = None


class AttachmentOut(BaseModel):
    part: str
    filename: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    url: str


class MessageDetailOut(MessageSummaryOut):
    mailbox_name: str
    reply_to: list[str]
    in_reply_to: str | None
    references: list[str]
    text: str | None
    html: str | None = Field(description="sanitized: no scripts, no event handlers, no remote content")
    remote_content_blocked: int
    attachments: list[AttachmentOut]
    thread: list[MessageSummaryOut]


class MessagePatch(_In):
    seen: bool | None = None
    flagged: bool | None = None
    answered: bool | None = None
    keywords: list[str] | None = Field(None, max_length=50, description="replaces the message's keywords")
    mailbox_id: int | None = Field(None, ge=1, description="move to this mailbox")

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str] | None) -> list[str] | None:
        for keyword in value or ():
            if keyword.startswith("\\") or not re.fullmatch(KEYWORD_PATTERN, keyword):
                raise ValueError(f"not a keyword: {keyword!r}")
        return value


class DeleteQuery(_In):
    permanent: bool = False


class AttachmentIn(_In):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", max_length=255)
    content_base64: str


def _addresses(values: list[str]) -> list[str]:
    for value in values:
        if not is_address(value):
            raise ValueError(f"not an email address: {value!r}")
    return values


class ComposeFields(_In):
    """What a message being written has, for POST /send and for drafts alike."""

    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    subject: str = Field("", max_length=998)
    text: str = Field("", max_length=10_000_000)
    html: str | None = Field(None, max_length=20_000_000)
    in_reply_to: str | None = Field(None, max_length=998)
    references: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _recipients(cls, values: list[str]) -> list[str]:
        return _addresses(values)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return one_line(value)

    @field_validator("in_reply_to")
    @classmethod
    def _message_id(cls, value: str | None) -> str | None:
        if value is not None and not is_message_id(value):
            raise ValueError("not a Message-ID (<id@host>)")
        return value

    @field_validator("references")
    @classmethod
    def _message_ids(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_message_id(value):
                raise ValueError(f"not a Message-ID: {value!r}")
        return values


def one_line(value: str | None) -> str | None:
    """A header value: no line breaks (header injection) and no NUL."""
    if value is not None and any(c in value for c in "\r\n\x00"):
        raise ValueError("must not contain line breaks")
    return value


class SendIn(ComposeFields):
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=100)
    from_name: str | None = Field(None, max_length=200)

    @field_validator("from_name")
    @classmethod
    def _from_name(cls, value: str | None) -> str | None:
        return one_line(value)


class SendOut(BaseModel):
    delivery_id: str
    message_id: str
