"""Messages exchanged between gateways and MailboxShards (pydantic: they cross process boundaries)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field


class Recipient(BaseModel):
    """One local user a message is stored for, as the Directory resolved it."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    domain: str
    local_part: str
    quota_bytes: int = 0


class DeliveryItem(BaseModel):
    """Store body `body_index` of the batch for one user: idempotent by `delivery_id`."""

    model_config = ConfigDict(frozen=True)

    delivery_id: uuid.UUID
    body_index: int
    recipient: Recipient
    mailbox: str = "INBOX"
    envelope_from: str = ""
    flags: tuple[str, ...] = ()
    internal_date: float


class DeliveryBatch(BaseModel):
    """Many deliveries in one Ray call (the batching rule): bodies are shared by index."""

    bodies: list[bytes]
    items: list[DeliveryItem]
    attempt: int = 0  # > 0 when the gateway resends after a failed call: the shard checks for duplicates


class DeliveryOutcome(BaseModel):
    """What happened to one item: stored (with its UID), or a transient/permanent refusal."""

    delivery_id: uuid.UUID
    ok: bool
    uid: int = 0
    mailbox_id: int = 0
    error_code: int = 0
    error_enhanced: str = ""
    error_text: str = ""


class DeliveryReport(BaseModel):
    """The shard's answer to a batch: one outcome per item, plus fresh storage use per user."""

    outcomes: list[DeliveryOutcome]
    usage: dict[int, int] = Field(default_factory=dict)
