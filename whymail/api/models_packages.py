"""Bodies and replies of the package and package template endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from pydantic import BaseModel, Field, field_validator, model_validator

from whymail.api.models import _In
from whymail.packages import USER_QUOTA_KEY, Limits, PackageRecord, TemplateRecord

_MAX_FEATURES_BYTES = 10_000
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


class _LimitsIn(_In):
    description: str = Field("", max_length=2000)
    max_users: int = Field(0, ge=0, le=_INT32, description="0: unlimited")
    max_storage_bytes: int = Field(0, ge=0, le=_INT64, description="Sum of the users' quotas; 0: unlimited")
    max_send_per_day: int = Field(0, ge=0, le=_INT32, description="0: unlimited (stored, not enforced yet)")
    max_user_quota_bytes: int = Field(0, ge=0, le=_INT64, description="Largest quota of one user; 0: unlimited")
    features: dict[str, Any] = Field(default_factory=dict, description="Free-form flags of the package")

    @field_validator("features")
    @classmethod
    def _small_features(cls, value: dict[str, Any]) -> dict[str, Any]:
        if USER_QUOTA_KEY in value:
            raise ValueError(f"{USER_QUOTA_KEY} is given as its own field")
        if len(orjson.dumps(value)) > _MAX_FEATURES_BYTES:
            raise ValueError(f"at most {_MAX_FEATURES_BYTES} bytes of JSON")
        return value

    def limits(self) -> Limits:
        return Limits(max_users=self.max_users, max_storage_bytes=self.max_storage_bytes,
                      max_send_per_day=self.max_send_per_day, max_user_quota_bytes=self.max_user_quota_bytes)


class PackageIn(_LimitsIn):
    """A whole package: PUT replaces every field (those not given take their defaults)."""

    name: str = Field(min_length=1, max_length=100)
    is_active: bool = Field(True, description="An inactive package cannot be assigned to more domains")


class TemplateIn(_LimitsIn):
    name: str = Field(min_length=1, max_length=100)


class InstantiateIn(_In):
    """Optional: an empty body takes everything from the template."""

    name: str | None = Field(None, min_length=1, max_length=100, description="Default: the template's name")
    description: str | None = Field(None, max_length=2000)

    @model_validator(mode="before")
    @classmethod
    def _empty_body(cls, value: Any) -> Any:
        return {} if value is None else value


class DomainPackageIn(_In):
    package_id: int | None = Field(description="null removes the domain's package (no limits)")


class _LimitsOut(BaseModel):
    id: int
    name: str
    description: str
    max_users: int
    max_storage_bytes: int
    max_send_per_day: int
    max_user_quota_bytes: int
    features: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


class PackageOut(_LimitsOut):
    template_id: int | None = None
    is_active: bool
    domain_count: int

    @classmethod
    def of(cls, p: PackageRecord) -> PackageOut:
        return cls(
            id=p.id, name=p.name, description=p.description, max_users=p.limits.max_users,
            max_storage_bytes=p.limits.max_storage_bytes, max_send_per_day=p.limits.max_send_per_day,
            max_user_quota_bytes=p.limits.max_user_quota_bytes, features=p.features, created_at=p.created_at,
            updated_at=p.updated_at, template_id=p.template_id, is_active=p.is_active, domain_count=p.domain_count,
        )


class TemplateOut(_LimitsOut):
    @classmethod
    def of(cls, t: TemplateRecord) -> TemplateOut:
        return cls(
            id=t.id, name=t.name, description=t.description, max_users=t.limits.max_users,
            max_storage_bytes=t.limits.max_storage_bytes, max_send_per_day=t.limits.max_send_per_day,
            max_user_quota_bytes=t.limits.max_user_quota_bytes, features=t.features, created_at=t.created_at,
            updated_at=t.updated_at,
        )


class DomainPackageOut(BaseModel):
    domain_id: int
    domain: str
    package: PackageOut | None = None
