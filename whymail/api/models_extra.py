"""Request and response bodies of drafts, uploaded attachments, signatures and read receipts."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from whymail.api.models import _In
from whymail.api.models_mail import ComposeFields


class UploadOut(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int
    draft_id: int | None = Field(None, description="the draft it is attached to, if any")
    created_at: dt.datetime
    url: str = Field(description="where to download it")


class DraftIn(ComposeFields):
    """A whole draft: PUT replaces every field. Recipients may be empty until it is sent."""

    attachment_ids: list[int] = Field(default_factory=list, max_length=100,
                                      description="ids from POST /attachments, in the order they are attached")

    @field_validator("attachment_ids")
    @classmethod
    def _ids(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values):
            raise ValueError("attachment ids are positive")
        if len(set(values)) != len(values):
            raise ValueError("an attachment is listed twice")
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
