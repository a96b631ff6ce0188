"""Request and response bodies of search, saved searches and rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field, model_validator

from whymail.api.models import _In
from whymail.api.models_mail import MessageSummaryOut
from whymail.rules.model import Action, RuleSpec

_NO_CONTROLS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # PostgreSQL text cannot hold NUL; the rest is noise


class SearchFilters(_In):
    """Filters of a search; all of them must hold."""

    mailbox_id: int | None = Field(None, ge=1, le=2**62, description="only this mailbox")
    unread: bool | None = None
    flagged: bool | None = None
    has_attachment: bool | None = None
    sender: str | None = Field(None, max_length=200, pattern=_NO_CONTROLS,
                               description="From contains (case-insensitive); `from` is accepted too")

    @model_validator(mode="before")
    @classmethod
    def _from_is_sender(cls, data: Any) -> Any:
        if isinstance(data, dict) and "from" in data:
            data = dict(data)
            value = data.pop("from")
            data.setdefault("sender", value)
        return data


class SearchQuery(SearchFilters):
    q: str = Field("", max_length=500, pattern=_NO_CONTROLS,
                   description="words that must all appear in the subject, the addresses or the body")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")


class PageQuery(_In):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")


class SearchHit(MessageSummaryOut):
    mailbox_name: str
    snippet: str = Field("", description="plain text around the matched words")


class SearchPage(BaseModel):
    messages: list[SearchHit]
    next_cursor: str | None = None


class SavedSearchIn(_In):
    name: str = Field(min_length=1, max_length=200, pattern=_NO_CONTROLS)
    query: str = Field("", max_length=500, pattern=_NO_CONTROLS)
    filters: SearchFilters = Field(default_factory=SearchFilters)


class SavedSearchOut(BaseModel):
    id: int
    name: str
    query: str
    filters: SearchFilters
    usage_count: int
    last_used_at: dt.datetime | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class RuleOut(RuleSpec):
    id: int
    execution_count: int = 0
    last_executed_at: dt.datetime | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class RuleTestIn(_In):
    """Test the rule on one message, or on the caller's `last` messages (newest first)."""

    message_id: int | None = Field(None, ge=1, le=2**62)
    last: int | None = Field(None, ge=1, le=100)

    @model_validator(mode="after")
    def _one_of(self) -> RuleTestIn:
        if (self.message_id is None) == (self.last is None):
            raise ValueError("give either message_id or last")
        return self


class RuleTestResult(BaseModel):
    message_id: int
    mailbox_id: int
    subject: str
    from_addr: str
    matched: bool
    actions: list[Action] = Field(default_factory=list, description="what the rule would do; nothing was done")
    error: str | None = Field(None, description="why the rule could not be decided (e.g. a regex timed out)")


class RuleTestOut(BaseModel):
    rule_id: int
    tested: int
    matched: int
    results: list[RuleTestResult]
