"""Bodies of the operator endpoints: the outbound queue and DKIM signing keys."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from whymail.api.models import _In
from whymail.queue.store import STATES

# One DNS label: what a DKIM selector is (RFC 6376 §3.1).
SELECTOR_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


# --- outbound queue ------------------------------------------------------------------------------

class QueueQuery(_In):
    status: str | None = Field(
        None, max_length=200, description=f"Comma-separated states to list: {', '.join(STATES)}",
    )
    limit: int = Field(100, ge=1, le=1000, description="At most this many entries, oldest first")

    @field_validator("status")
    @classmethod
    def _known_states(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for state in value.split(","):
            if state.strip() not in STATES:
                raise ValueError(f"unknown state {state.strip()[:30]!r}: use {', '.join(STATES)}")
        return value

    def statuses(self) -> list[str] | None:
        return [s.strip() for s in self.status.split(",")] if self.status else None


class RecipientResult(BaseModel):
    status: str = Field(description="delivered and failed are final; deferred is tried again")
    code: int = 0
    enhanced: str = ""
    text: str = ""
    remote: str = ""
    at: float = Field(0.0, description="Unix time of the answer")
    bounced: bool = False


class QueueEntryOut(BaseModel):
    """One row of the outbound queue: a submission's recipients in one domain."""

    id: int
    delivery_id: uuid.UUID
    user_id: int | None
    sender: str = Field(description="Envelope sender; empty for a bounce")
    recipient_domain: str
    recipients: list[str]
    recipient_results: dict[str, RecipientResult]
    size: int
    status: str
    priority: int
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None = None
    expires_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


class QueuePage(BaseModel):
    items: list[QueueEntryOut]
    counts: dict[str, int] = Field(description="Entries per state in the whole queue")


# --- DKIM ----------------------------------------------------------------------------------------

class DkimKeyIn(_In):
    selector: str | None = Field(
        None, max_length=63, pattern=SELECTOR_PATTERN,
        description="DNS selector, one label of lower-case letters, digits and '-' (default: wmYYYYMM)",
    )
    algorithm: Literal["rsa", "ed25519"] = "rsa"
    bits: Literal[1024, 2048, 3072, 4096] = Field(2048, description="RSA key size (ignored for ed25519)")
    activate: bool = Field(
        False,
        description="Sign with the new key at once, retiring the current one; without it the key waits for "
                    "/activate when the domain already has an active key of that algorithm",
    )


class DkimKeyOut(BaseModel):
    """A signing key without its private part, with the DNS TXT record to publish."""

    domain: str
    selector: str
    algorithm: str
    public_key: str = Field(description="Base64 value of the record's p= tag")
    dns_record: str = Field(description="The zone-file line to publish")
    is_active: bool = Field(description="Outbound mail of the domain is signed with it")
    created_at: dt.datetime
