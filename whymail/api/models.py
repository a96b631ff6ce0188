"""Request and response bodies of the API (pydantic: validated in, documented in the OpenAPI spec)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LoginIn(_In):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(_In):
    refresh_token: str = Field(min_length=10, max_length=200)


class UserOut(BaseModel):
    id: int
    email: str
    domain: str
    role: str
    display_name: str = ""
    is_active: bool = True
    quota_bytes: int = 0
    storage_used: int = 0
    message_count: int = 0
    created_at: dt.datetime | None = None
    last_login_at: dt.datetime | None = None


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    user: UserOut


class ApiTokenIn(_In):
    name: str = Field(min_length=1, max_length=200)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class ApiTokenOut(BaseModel):
    id: int
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="Shown once; only its hash is stored")


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)
