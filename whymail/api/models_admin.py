"""Bodies of the administrative endpoints: domains, users, aliases, system config, storage, audit."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, Field, JsonValue, field_validator

from whymail.api.models import _In

Role = Literal["user", "owner", "admin"]
CONFIG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


def _plain_text(value: str | None) -> str | None:
    if value is not None and any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("must not contain control characters (such as line breaks)")
    return value


# --- domains -------------------------------------------------------------------------------------

class DomainIn(_In):
    name: str = Field(min_length=1, max_length=253, description="Domain name (IDN accepted, stored as A-labels)")


class DomainOut(BaseModel):
    id: int
    name: str
    is_active: bool
    max_users: int = Field(description="0: unlimited")
    user_count: int
    alias_count: int
    created_at: dt.datetime


class DomainDeleteQuery(_In):
    force: bool = Field(False, description="Delete the domain's users (and their mail rows) too")


# --- users ---------------------------------------------------------------------------------------

class UserCreateIn(_In):
    email: str = Field(min_length=1, max_length=320, description="Local part, or a full address in this domain")
    password: str = Field(min_length=1, max_length=1024)
    display_name: str = Field("", max_length=256)
    quota_bytes: int | None = Field(
        None, ge=0, le=2**63 - 1, description="0: unlimited; absent: limits.default_quota"
    )
    role: Role = "user"

    _no_controls = field_validator("display_name")(_plain_text)


class UserPatchIn(_In):
    display_name: str | None = Field(None, max_length=256)
    password: str | None = Field(None, min_length=1, max_length=1024)
    quota_bytes: int | None = Field(None, ge=0, le=2**63 - 1)
    is_active: bool | None = None
    role: Role | None = None

    _no_controls = field_validator("display_name")(_plain_text)


# --- aliases -------------------------------------------------------------------------------------

class AliasIn(_In):
    source: str = Field(
        min_length=1, max_length=320,
        description="Local part or full address in this domain; `@` (or `@domain`) for the catch-all",
    )
    destinations: list[str] = Field(min_length=1, max_length=1000)


class AliasOut(BaseModel):
    id: int
    source: str
    domain: str
    destinations: list[str]
    is_active: bool
    is_catch_all: bool
    created_at: dt.datetime


# --- system config -------------------------------------------------------------------------------

class SystemConfigIn(_In):
    settings: dict[str, JsonValue] = Field(
        description="Keys to set to JSON values; a null value removes the key. Other keys are kept.",
    )

    @field_validator("settings")
    @classmethod
    def _keys(cls, settings: dict[str, Any]) -> dict[str, Any]:
        for key in settings:
            if not re.match(CONFIG_KEY_PATTERN, key):
                raise ValueError(f"key {key[:50]!r} must be 1-200 letters, digits, '_', '.' or '-'")
        return settings


class SystemConfigOut(BaseModel):
    settings: dict[str, JsonValue]
    updated_at: dt.datetime | None = Field(None, description="When a key was last changed")


# --- storage statistics --------------------------------------------------------------------------

class StorageQuery(_In):
    domain_id: int | None = Field(None, ge=1, description="Only this domain (an owner always gets their own)")
    top: int = Field(10, ge=1, le=1000, description="How many of the largest users to list")


class DomainStorage(BaseModel):
    domain_id: int
    domain: str
    user_count: int
    storage_used: int
    message_count: int
    quota_bytes: int = Field(description="Sum of the users' quotas (unlimited users count 0)")


class UserStorage(BaseModel):
    user_id: int
    email: str
    storage_used: int
    message_count: int
    quota_bytes: int
    percent_used: float | None = Field(None, description="None when the quota is unlimited")


class StorageStats(BaseModel):
    total_storage_used: int
    total_messages: int
    domains: list[DomainStorage]
    top_users: list[UserStorage]


# --- audit ---------------------------------------------------------------------------------------

class AuditQuery(_In):
    action: str | None = Field(None, min_length=1, max_length=100)
    actor: str | None = Field(None, min_length=1, max_length=320, description="Actor email (exact, any case)")
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: int | None = Field(None, ge=1, description="next_cursor of the previous page")


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor_user_id: int | None
    actor_email: str | None
    actor_ip: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: int | None = Field(None, description="Pass as `cursor` for older rows; None at the end")
