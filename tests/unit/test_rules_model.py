"""Rules: validation of what a user writes, and pure evaluation against message facts."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from whymail.rules.evaluate import MessageFacts, condition_holds, evaluate_rule, evaluate_rules
from whymail.rules.model import Condition, RuleSpec
from whymail.rules.regex_guard import RegexGuard

MESSAGE = MessageFacts(
    subject="Invoice 2025-07 for ACME", from_addr="Billing <billing@acme.test>",
    to_addrs="ann@example.test, Bob <bob@example.test>", cc_addrs="", body_text="Please pay by Friday.",
    size=4_000, has_attachment=True, headers={"x-priority": ("1 (Highest)",), "list-id": ("<news.acme.test>",)},
)


@pytest.fixture(scope="module")
def guard():
    guard = RegexGuard(timeout=0.3)
    yield guard
    guard.close()


def _search(guard: RegexGuard):
    return lambda pattern, text, ignore_case: guard.search(pattern, text, ignore_case=ignore_case)


def _rule(*conditions: dict, match_all: bool = True, actions=({"type": "star"},), **extra) -> RuleSpec:
    return RuleSpec.model_validate({"name": "r", "conditions": list(conditions), "actions": list(actions),
                                    "match_all": match_all, **extra})


def _error_location(data: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        RuleSpec.model_validate({"name": "r", "conditions": [{"field": "subject", "operator": "contains",
                                                              "value": "x"}],
                                 "actions": [{"type": "star"}], **data})
    return ".".join(str(part) for part in caught.value.errors()[0]["loc"])


# --- validation --------------------------------------------------------------------------------------


def test_unknown_operator_is_named_by_its_location():
    assert _error_location({"conditions": [{"field": "subject", "operator": "like", "value": "x"}]}) \
        == "conditions.0.operator"


def test_operator_must_fit_the_field():
    assert _error_location({"conditions": [{"field": "size", "operator": "contains", "value": 1}]}) \
        == "conditions.0.operator"
    assert _error_location({"conditions": [{"field": "subject", "operator": "greater_than", "value": "x"}]}) \
        == "conditions.0.operator"
    assert _error_location({"conditions": [{"field": "header", "operator": "equals", "value": "x"}]}) \
        == "conditions.0.operator"  # no header name


def test_invalid_regex_and_wrong_value_types_are_rejected_on_value():
    assert _error_location({"conditions": [{"field": "body", "operator": "regex", "value": "(unclosed"}]}) \
        == "conditions.0.value"
    assert _error_location({"conditions": [{"field": "size", "operator": "less_than", "value": "big"}]}) \
        == "conditions.0.value"
    assert _error_location({"conditions": [{"field": "has_attachment", "operator": "equals", "value": "yes"}]}) \
        == "conditions.0.value"


def test_actions_need_their_arguments():
    assert _error_location({"actions": [{"type": "move"}]}) == "actions.0.move.mailbox"
    assert _error_location({"actions": [{"type": "forward", "to": "not an address"}]}) == "actions.0.forward.to"
    assert _error_location({"actions": [{"type": "explode"}]}) == "actions.0"
    assert _error_location({"actions": []}) == "actions"
    assert _error_location({"apply_to": "sideways"}) == "apply_to"


# --- evaluation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "operator", "value", "expected"), [
    ("subject", "equals", "invoice 2025-07 for acme", True),
    ("subject", "equals", "Invoice", False),
    ("subject", "contains", "2025-07", True),
    ("subject", "contains", "2024", False),
    ("subject", "starts_with", "INVOICE", True),
    ("subject", "starts_with", "ACME", False),
    ("subject", "ends_with", "acme", True),
    ("subject", "ends_with", "invoice", False),
    ("subject", "regex", r"\d{4}-\d{2}", True),
    ("subject", "regex", r"^\d", False),
    ("from", "equals", "billing@acme.test", True),  # one address of the field is enough
    ("from", "ends_with", "@acme.test", True),
    ("to", "equals", "bob@example.test", True),
    ("to", "equals", "carol@example.test", False),
    ("cc", "contains", "@", False),
    ("body", "contains", "friday", True),
    ("header", "starts_with", "1", True),
])
def test_text_operators(guard, field, operator, value, expected):
    condition = Condition.model_validate({"field": field, "operator": operator, "value": value,
                                          **({"header": "X-Priority"} if field == "header" else {})})
    assert condition_holds(condition, MESSAGE, _search(guard)) is expected
    negated = condition.model_copy(update={"negate": True})
    assert condition_holds(negated, MESSAGE, _search(guard)) is not expected


def test_case_sensitive_comparison(guard):
    sensitive = Condition(field="subject", operator="contains", value="acme", case_sensitive=True)
    assert not condition_holds(sensitive, MESSAGE, _search(guard))
    assert not condition_holds(sensitive.model_copy(update={"operator": "regex"}), MESSAGE, _search(guard))
    assert condition_holds(sensitive.model_copy(update={"value": "ACME"}), MESSAGE, _search(guard))


def test_missing_header_does_not_match():
    condition = Condition(field="header", header="X-Spam", operator="contains", value="yes")
    assert not condition_holds(condition, MESSAGE)


def test_size_and_attachment():
    assert condition_holds(Condition(field="size", operator="greater_than", value=3_999), MESSAGE)
    assert not condition_holds(Condition(field="size", operator="less_than", value=4_000), MESSAGE)
    assert condition_holds(Condition(field="size", operator="equals", value=4_000), MESSAGE)
    assert condition_holds(Condition(field="has_attachment", operator="equals", value=True), MESSAGE)
    assert not condition_holds(Condition(field="has_attachment", operator="equals", value=False), MESSAGE)


def test_and_or_combinations():
    yes = {"field": "subject", "operator": "contains", "value": "invoice"}
    no = {"field": "subject", "operator": "contains", "value": "holiday"}
    assert evaluate_rule(_rule(yes, yes), MESSAGE).matched
    assert not evaluate_rule(_rule(yes, no), MESSAGE).matched
    assert evaluate_rule(_rule(no, yes, match_all=False), MESSAGE).matched
    assert not evaluate_rule(_rule(no, no, match_all=False), MESSAGE).matched
    assert evaluate_rule(_rule(yes, {**no, "negate": True}), MESSAGE).matched


def test_matched_rule_reports_its_actions():
    rule = _rule({"field": "has_attachment", "operator": "equals", "value": True},
                 actions=({"type": "move", "mailbox": "Invoices"}, {"type": "mark_read"}))
    outcome = evaluate_rule(rule, MESSAGE)
    assert outcome.matched and outcome.error is None
    assert [a.type for a in outcome.actions] == ["move", "mark_read"] and outcome.actions[0].mailbox == "Invoices"
    assert evaluate_rule(_rule({"field": "size", "operator": "less_than", "value": 10}), MESSAGE).actions == ()


def test_catastrophic_regex_times_out_with_an_error_quickly(guard):
    rule = _rule({"field": "body", "operator": "regex", "value": r"(a+)+$"})
    hostile = MessageFacts(body_text="a" * 5_000 + "!")
    started = time.monotonic()
    outcome = evaluate_rule(rule, hostile, _search(guard))
    assert time.monotonic() - started < 5
    assert not outcome.matched and outcome.error is not None and "conditions.0" in outcome.error
    assert "longer than" in outcome.error
    # The guard recovers: the next search runs in a fresh worker and answers.
    assert evaluate_rule(_rule({"field": "body", "operator": "regex", "value": "a+!"}), hostile,
                         _search(guard)).matched


def test_rules_run_in_priority_order_and_stop():
    star = {"field": "subject", "operator": "contains", "value": "invoice"}
    rules = [
        (1, _rule(star, priority=5)),
        (2, _rule(star, priority=1, actions=({"type": "label", "label": "Bills"}, {"type": "stop"}))),
        (3, _rule(star, priority=0, enabled=False)),
        (4, _rule(star, priority=0, apply_to="outgoing")),
    ]
    ran = evaluate_rules(rules, MESSAGE, "incoming")
    assert [rule_id for rule_id, _ in ran] == [2]  # 3 is disabled, 4 is for outgoing, 2 stops before 1
    assert [rule_id for rule_id, _ in evaluate_rules(rules, MESSAGE, "outgoing")] == [4]  # the others are for incoming mail
    rules[1] = (2, _rule(star, priority=1, stop_processing=True))
    assert [rule_id for rule_id, _ in evaluate_rules(rules, MESSAGE, "incoming")] == [2]
    rules[1] = (2, _rule(star, priority=1))
    assert [rule_id for rule_id, _ in evaluate_rules(rules, MESSAGE, "incoming")] == [2, 1]


@given(st.text(max_size=50), st.text(min_size=1, max_size=10))
def test_contains_agrees_with_python_casefolded_in(text, needle):
    condition = Condition(field="subject", operator="contains", value=needle)
    assert condition_holds(condition, MessageFacts(subject=text)) == (needle.casefold() in text.casefold())
