"""Evaluating rules against a message: pure, given the message's facts and a regex search function.

`evaluate_rule` says whether one rule matches and which actions it would take; `evaluate_rules` runs a
user's rules in order (priority, then id), honouring `enabled`, `apply_to`, `stop_processing` and the
`stop` action. Nothing here changes a message: carrying the actions out is the caller's business.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from whymail.rules.model import Action, Condition, RuleSpec
from whymail.rules.regex_guard import RegexFailure, default_guard

# search(pattern, text, ignore_case) -> found; raises RegexFailure (RegexTimeout on overrun).
RegexSearch = Callable[[str, str, bool], bool]
Direction = Literal["incoming", "outgoing"]
_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What rules look at. `headers` maps lower-case field names to their (unfolded, decoded) values."""

    subject: str = ""
    from_addr: str = ""
    to_addrs: str = ""
    cc_addrs: str = ""
    body_text: str = ""
    size: int = 0
    has_attachment: bool = False
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """Whether a rule matched, the actions it would take, and why it could not be decided (`error`)."""

    matched: bool
    actions: tuple[Action, ...] = ()
    error: str | None = None

    @property
    def stops(self) -> bool:
        return self.matched and any(action.type == "stop" for action in self.actions)


def guarded_search(pattern: str, text: str, ignore_case: bool) -> bool:
    """The default RegexSearch: in the worker process of `regex_guard`, with its time limit."""
    return default_guard().search(pattern, text, ignore_case=ignore_case)


def _candidates(condition: Condition, message: MessageFacts) -> list[str]:
    """The texts a text condition is tried on; it holds when it holds for any of them."""
    match condition.field:
        case "subject":
            return [message.subject]
        case "body":
            return [message.body_text]
        case "header":
            return list(message.headers.get((condition.header or "").lower(), ()))
    value = {"from": message.from_addr, "to": message.to_addrs, "cc": message.cc_addrs}[condition.field]
    # The whole field, then each address in it: `from equals a@b.test` holds for "Ann <a@b.test>".
    return [value, *_ADDRESS.findall(value)]


def _text_holds(condition: Condition, text: str, search: RegexSearch) -> bool:
    value = str(condition.value)
    if condition.operator == "regex":
        return search(value, text, not condition.case_sensitive)
    if not condition.case_sensitive:
        text, value = text.casefold(), value.casefold()
    match condition.operator:
        case "equals":
            return text.strip() == value.strip()
        case "contains":
            return value in text
        case "starts_with":
            return text.startswith(value)
        case "ends_with":
            return text.endswith(value)
    raise ValueError(f"operator {condition.operator} does not apply to text")  # the model rules this out


def condition_holds(condition: Condition, message: MessageFacts, search: RegexSearch = guarded_search) -> bool:
    """Whether one condition holds (negation applied); RegexFailure when its regex cannot be decided."""
    if condition.field == "size":
        limit = int(condition.value)
        held = {"equals": message.size == limit, "greater_than": message.size > limit,
                "less_than": message.size < limit}[condition.operator]
    elif condition.field == "has_attachment":
        held = message.has_attachment == condition.value
    else:
        held = any(_text_holds(condition, text, search) for text in _candidates(condition, message))
    return held != condition.negate


def evaluate_rule(rule: RuleSpec, message: MessageFacts, search: RegexSearch = guarded_search) -> RuleOutcome:
    """Whether `rule` matches `message` (AND or OR of its conditions) and the actions it would take.

    A regex that fails or runs out of time makes the rule not match, with the reason in `error`.
    """
    for index, condition in enumerate(rule.conditions):
        try:
            held = condition_holds(condition, message, search)
        except RegexFailure as exc:
            return RuleOutcome(False, (), f"conditions.{index}: {exc}")
        if held != rule.match_all:  # a false under AND, or a true under OR, decides
            return _outcome(held, rule)
    return _outcome(rule.match_all, rule)


def _outcome(matched: bool, rule: RuleSpec) -> RuleOutcome:
    return RuleOutcome(True, tuple(rule.actions)) if matched else RuleOutcome(False)


def evaluate_rules(
    rules: Sequence[tuple[int, RuleSpec]], message: MessageFacts, direction: Direction,
    search: RegexSearch = guarded_search,
) -> list[tuple[int, RuleOutcome]]:
    """Run `(rule_id, rule)` pairs in order (priority, then id) and return the outcome of each rule
    that ran; enabled rules for `direction` only, until a match that stops processing."""
    ran: list[tuple[int, RuleOutcome]] = []
    for rule_id, rule in sorted(rules, key=lambda pair: (pair[1].priority, pair[0])):
        if not rule.enabled or rule.apply_to not in (direction, "all"):
            continue
        outcome = evaluate_rule(rule, message, search)
        ran.append((rule_id, outcome))
        if outcome.matched and (rule.stop_processing or outcome.stops):
            break
    return ran
