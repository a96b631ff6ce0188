"""Rules as the user writes them: conditions on a message, actions to take when they match.

A rule is validated once, when it is stored: every field must fit its operator, every regex must
compile, every action must carry what it needs. What is stored can then be evaluated without checks.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from whymail.mime.compose import is_address

TEXT_FIELDS = ("subject", "from", "to", "cc", "header", "body")
TEXT_OPERATORS = ("equals", "contains", "starts_with", "ends_with", "regex")
SIZE_OPERATORS = ("equals", "greater_than", "less_than")
MAX_PATTERN_CHARS = 500

ConditionField = Literal["subject", "from", "to", "cc", "header", "body", "size", "has_attachment"]
Operator = Literal["equals", "contains", "starts_with", "ends_with", "regex", "greater_than", "less_than"]
_HEADER_NAME = re.compile(r"[!-9;-~]{1,100}")  # RFC 5322 §2.2 ftext


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


class Condition(_Strict):
    """One test on a message. Text comparisons ignore case unless `case_sensitive`."""

    field: ConditionField
    header: str | None = Field(None, description="the header field's name, when field is 'header'")
    operator: Operator
    value: str | int | bool
    negate: bool = False
    case_sensitive: bool = False

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError("not a header field name")
        return value

    @field_validator("operator")
    @classmethod
    def _operator_fits_field(cls, value: str, info: ValidationInfo) -> str:
        field = info.data.get("field")
        if field == "header" and not info.data.get("header"):
            raise ValueError("a 'header' condition needs the header's name in 'header'")
        if field in TEXT_FIELDS and value not in TEXT_OPERATORS:
            raise ValueError(f"{field} takes one of {', '.join(TEXT_OPERATORS)}")
        if field == "size" and value not in SIZE_OPERATORS:
            raise ValueError(f"size takes one of {', '.join(SIZE_OPERATORS)}")
        if field == "has_attachment" and value != "equals":
            raise ValueError("has_attachment takes 'equals'")
        return value

    @field_validator("value")
    @classmethod
    def _value_fits_operator(cls, value: str | int | bool, info: ValidationInfo) -> str | int | bool:
        field, operator = info.data.get("field"), info.data.get("operator")
        if field is None or operator is None:
            return value  # the field or operator is wrong already; that error is the one to report
        if field == "has_attachment":
            if not isinstance(value, bool):
                raise ValueError("has_attachment compares with true or false")
        elif field == "size":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("size compares with a number of bytes")
        elif not isinstance(value, str) or not 1 <= len(value) <= MAX_PATTERN_CHARS:
            raise ValueError(f"{field} compares with a text of 1 to {MAX_PATTERN_CHARS} characters")
        elif operator == "regex":
            try:
                re.compile(value)
            except (re.error, RecursionError, OverflowError) as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class MoveAction(_Strict):
    type: Literal["move"]
    mailbox: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")


class LabelAction(_Strict):
    type: Literal["label"]
    label: str = Field(min_length=1, max_length=100, pattern=r"^\$?[A-Za-z0-9_.\-]+$",
                       description="an IMAP keyword such as Work or $Important")


class ForwardAction(_Strict):
    type: Literal["forward"]
    to: str = Field(min_length=3, max_length=320, description="the address to forward to")

    @field_validator("to")
    @classmethod
    def _address(cls, value: str) -> str:
        if not is_address(value):
            raise ValueError("not an email address")
        return value


class SimpleAction(_Strict):
    type: Literal["mark_read", "star", "delete", "stop"]


Action = Annotated[MoveAction | LabelAction | ForwardAction | SimpleAction, Field(discriminator="type")]


class RuleSpec(_Strict):
    """Everything a user sets on a rule (what the API accepts and the email_rules row stores)."""

    name: str = Field(min_length=1, max_length=200)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="lower runs first")
    enabled: bool = True
    apply_to: Literal["incoming", "outgoing", "all"] = "incoming"
    match_all: bool = Field(True, description="true: every condition must hold (AND); false: any (OR)")
    stop_processing: bool = Field(False, description="when it matches, no later rule runs")
    conditions: list[Condition] = Field(min_length=1, max_length=50)
    actions: list[Action] = Field(min_length=1, max_length=20)
