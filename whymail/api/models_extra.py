"""Request and response bodies of drafts, uploaded attachments, signatures and read receipts."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from whymail.api.models import _In
from whymail.mime.compose import is_address, is_message_id


class UploadOut(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int
    draft_id: int | None = Field(None, description="the draft it is attached to, if any")
    created_at: dt.datetime
    url: str = Field(description="where to download it")


def _one_line(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("must not contain line breaks")
    return value


class DraftIn(_In):
    """A whole draft: PUT replaces every field. Recipients may be empty until it is sent."""

    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    subject: str = Field("", max_length=998)
    text: str = Field("", max_length=10_000_000)
    html: str | None = Field(None, max_length=20_000_000)
    attachment_ids: list[int] = Field(default_factory=list, max_length=100,
                                      description="ids from POST /attachments, in the order they are attached")
    in_reply_to: str | None = Field(None, max_length=998)
    references: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_address(value):
                raise ValueError(f"not an email address: {value!r}")
        return values

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _one_line(value)

    @field_validator("attachment_ids")
    @classmethod
    def _ids(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values):
            raise ValueError("attachment ids are positive")
        if len(set(values)) != len(values):
            raise ValueError("an attachment is listed twice")
        return values

    @field_validator("in_reply_to")
    @classmethod
    def _parent(cls, value: str | None) -> str | None:
        if value is not None and not is_message_id(value):
            raise ValueError("not a Message-ID (<id@host>)")
        return value

    @field_validator("references")
    @classmethod
    def _references(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_message_id(value):
                raise ValueError(f"not a Message-ID: {value!r}")
        return values


class DraftOut(BaseModel):
    id: int
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    text: str
    html: str | None
    attachments: list[UploadOut]
    in_reply_to: str | None
    references: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class DraftSentOut(BaseModel):
    delivery_id: str
    message_id: str


class SignatureIn(_In):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    text: str = Field("", max_length=100_000)
    html: str = Field("", max_length=500_000)
    is_default: bool = Field(False, description="make it the default (the previous default stops being one)")


class SignatureOut(BaseModel):
    id: int
    name: str
    text: str
    html: str
    is_default: bool
    created_at: dt.datetime
    updated_at: dt.datetime


ReceiptStatus = Literal["pending", "sent", "ignored", "failed"]


class ReadReceiptIn(_In):
    action: Literal["send", "ignore"] = Field(
        "send", description="send: mail the read receipt (MDN, RFC 8098) now; ignore: decline it for good")


class ReadReceiptQuery(_In):
    status: ReceiptStatus | None = None


class ReadReceiptOut(BaseModel):
    id: int
    message_id: int = Field(description="the received message the receipt is about")
    requested_by: str = Field(description="the Disposition-Notification-To address(es)")
    status: ReceiptStatus
    sent_at: dt.datetime | None
    created_at: dt.datetime
