"""The inbound RCPT decision table and the SIZE= parameter (whymail.smtp.policy)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.directory.snapshot import LocalUser, Resolution
from whymail.smtp import policy
from whymail.smtp.policy import RcptContext, declared_size, quota_reply, rcpt_reply
from whymail.smtp.replies import SmtpReply
from whymail.store.models import Recipient


def _user(user_id: int = 1, *, quota: int = 0, used: int = 0, active: bool = True) -> LocalUser:
    return LocalUser(
        user_id=user_id,
        email=f"u{user_id}@example.test",
        domain="example.test",
        local_part=f"u{user_id}",
        quota_bytes=quota,
        storage_used=used,
        is_active=active,
    )


def _ctx(
    *, authenticated: bool = False, accepted: int = 0, max_recipients: int = 20, size: int = 0
) -> RcptContext:
    return RcptContext(
        authenticated=authenticated,
        accepted_so_far=accepted,
        max_recipients=max_recipients,
        declared_size=size,
    )


def _usage(table: dict[int, int]):
    return lambda user_id: table.get(user_id, 0)


def _no_usage(user_id: int) -> int:
    return 0


def _codes(reply: SmtpReply) -> tuple[int, str]:
    return reply.code, reply.enhanced


# --- rcpt_reply ---------------------------------------------------------------------------------


def test_active_local_user_is_accepted_with_250_2_1_5() -> None:
    reply = rcpt_reply(Resolution("local", (_user(),)), _ctx(), _no_usage)
    assert _codes(reply) == (250, "2.1.5")
    assert reply.is_success


def test_unknown_user_gets_550_5_1_1() -> None:
    assert _codes(rcpt_reply(Resolution("unknown_user"), _ctx(), _no_usage)) == (550, "5.1.1")


def test_disabled_user_gets_550_5_2_1() -> None:
    resolution = Resolution("disabled", (_user(active=False),))
    assert _codes(rcpt_reply(resolution, _ctx(), _no_usage)) == (550, "5.2.1")


def test_remote_recipient_without_authentication_gets_550_5_7_1() -> None:
    resolution = Resolution("remote", remote_addresses=("someone@example.org",))
    assert _codes(rcpt_reply(resolution, _ctx(authenticated=False), _no_usage)) == (550, "5.7.1")


def test_remote_recipient_of_an_authenticated_client_is_accepted() -> None:
    resolution = Resolution("remote", remote_addresses=("someone@example.org",))
    assert _codes(rcpt_reply(resolution, _ctx(authenticated=True), _no_usage)) == (250, "2.1.5")


def test_recipient_past_the_limit_gets_452_4_5_3() -> None:
    reply = rcpt_reply(Resolution("local", (_user(),)), _ctx(accepted=20, max_recipients=20), _no_usage)
    assert _codes(reply) == (452, "4.5.3")
    assert reply.is_transient


def test_last_recipient_within_the_limit_is_accepted() -> None:
    reply = rcpt_reply(Resolution("local", (_user(),)), _ctx(accepted=19, max_recipients=20), _no_usage)
    assert _codes(reply) == (250, "2.1.5")


_EVERY_KIND = [
    Resolution("local", (_user(),)),
    Resolution("local", (_user(quota=1),)),
    Resolution("local", (_user(),), ("friend@example.org",)),
    Resolution("unknown_user"),
    Resolution("disabled", (_user(active=False),)),
    Resolution("remote", remote_addresses=("x@example.org",)),
]


@given(
    resolution=st.sampled_from(_EVERY_KIND),
    max_recipients=st.integers(min_value=1, max_value=1000),
    extra=st.integers(min_value=0, max_value=1000),
    authenticated=st.booleans(),
)
def test_recipient_limit_is_checked_before_anything_else(
    resolution: Resolution, max_recipients: int, extra: int, authenticated: bool
) -> None:
    ctx = _ctx(authenticated=authenticated, accepted=max_recipients + extra, max_recipients=max_recipients)
    assert _codes(rcpt_reply(resolution, ctx, _no_usage)) == (452, "4.5.3")


def test_declared_size_over_the_quota_gets_452_4_2_2() -> None:
    resolution = Resolution("local", (_user(quota=1000),))
    assert _codes(rcpt_reply(resolution, _ctx(size=1001), _no_usage)) == (452, "4.2.2")


def test_declared_size_that_exactly_fills_the_quota_is_accepted() -> None:
    resolution = Resolution("local", (_user(quota=1000),))
    assert _codes(rcpt_reply(resolution, _ctx(size=400), _usage({1: 600}))) == (250, "2.1.5")


def test_usage_plus_declared_size_over_the_quota_gets_452_4_2_2() -> None:
    resolution = Resolution("local", (_user(quota=1000),))
    assert _codes(rcpt_reply(resolution, _ctx(size=401), _usage({1: 600}))) == (452, "4.2.2")


def test_usage_already_over_the_quota_gets_452_4_2_2_without_a_declared_size() -> None:
    resolution = Resolution("local", (_user(quota=1000),))
    assert _codes(rcpt_reply(resolution, _ctx(), _usage({1: 1500}))) == (452, "4.2.2")


def test_quota_check_uses_the_fresh_usage_not_the_snapshot_value() -> None:
    # The snapshot says the mailbox is empty, the shard's latest report says it is full.
    resolution = Resolution("local", (_user(quota=1000, used=0),))
    assert _codes(rcpt_reply(resolution, _ctx(), _usage({1: 1001}))) == (452, "4.2.2")


def test_zero_quota_means_unlimited() -> None:
    resolution = Resolution("local", (_user(quota=0),))
    reply = rcpt_reply(resolution, _ctx(size=10**12), _usage({1: 10**15}))
    assert _codes(reply) == (250, "2.1.5")


def test_alias_is_refused_with_452_4_2_2_when_any_of_its_users_is_full() -> None:
    resolution = Resolution("local", (_user(1, quota=1000), _user(2, quota=1000)))
    assert _codes(rcpt_reply(resolution, _ctx(), _usage({1: 10, 2: 5000}))) == (452, "4.2.2")


def test_alias_to_two_users_with_room_is_accepted() -> None:
    resolution = Resolution("local", (_user(1, quota=1000), _user(2)))
    assert _codes(rcpt_reply(resolution, _ctx(size=500), _usage({1: 10, 2: 5000}))) == (250, "2.1.5")


def test_alias_that_forwards_off_site_gets_451_4_3_2_rather_than_being_dropped() -> None:
    resolution = Resolution("local", (_user(),), ("friend@example.org",))
    reply = rcpt_reply(resolution, _ctx(), _no_usage)
    assert _codes(reply) == (451, "4.3.2")
    assert reply.is_transient


def test_alias_that_only_forwards_off_site_gets_451_4_3_2() -> None:
    resolution = Resolution("local", (), ("friend@example.org",))
    assert _codes(rcpt_reply(resolution, _ctx(), _no_usage)) == (451, "4.3.2")


def test_local_resolution_without_any_destination_gets_550_5_1_1() -> None:
    assert _codes(rcpt_reply(Resolution("local"), _ctx(), _no_usage)) == (550, "5.1.1")


def test_rcpt_replies_render_as_code_enhanced_text() -> None:
    reply = rcpt_reply(Resolution("unknown_user"), _ctx(), _no_usage)
    assert str(reply) == f"550 5.1.1 {reply.text}"
    assert reply.text


# --- quota_reply (the end of DATA: every recipient, or none) ------------------------------------


def _rcpt(user_id: int, quota: int) -> Recipient:
    return Recipient(user_id=user_id, domain="example.test", local_part=f"u{user_id}", quota_bytes=quota)


def test_message_that_fits_every_recipient_gets_no_quota_reply() -> None:
    rcpts = [_rcpt(1, 3000), _rcpt(2, 0), _rcpt(3, 1000)]
    assert quota_reply(rcpts, 1000, _usage({1: 2000, 2: 10**9})) is None  # exactly fills 1 and 3


def test_one_recipient_the_message_does_not_fit_makes_it_452_4_2_2_for_all() -> None:
    rcpts = [_rcpt(1, 0), _rcpt(2, 3000), _rcpt(3, 10**6)]
    reply = quota_reply(rcpts, 1001, _usage({2: 2000}))
    assert reply is policy.MAILBOX_FULL
    assert _codes(reply) == (452, "4.2.2")


def test_quota_reply_counts_the_usage_of_each_recipient_on_its_own() -> None:
    rcpts = [_rcpt(1, 5000), _rcpt(2, 5000)]
    assert quota_reply(rcpts, 3000, _usage({1: 2000, 2: 0})) is None
    assert quota_reply(rcpts, 3000, _usage({1: 0, 2: 2001})) is policy.MAILBOX_FULL


def test_quota_reply_with_unlimited_or_no_recipients_is_none() -> None:
    assert quota_reply([_rcpt(1, 0)], 10**12, _usage({1: 10**12})) is None
    assert quota_reply([], 10**12, _no_usage) is None


@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=6),
    st.integers(0, 10**6),
)
def test_quota_reply_refuses_exactly_when_some_quota_would_be_exceeded(
    table: list[tuple[int, int]], size: int
) -> None:
    rcpts = [_rcpt(i, quota) for i, (quota, _used) in enumerate(table)]
    used = {i: u for i, (_quota, u) in enumerate(table)}
    over = any(quota and used[i] + size > quota for i, (quota, _u) in enumerate(table))
    assert (quota_reply(rcpts, size, _usage(used)) is policy.MAILBOX_FULL) == over


# --- declared_size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], 0),
        (["SIZE=1000"], 1000),
        (["size=1000"], 1000),
        (["BODY=8BITMIME", "SIZE=42", "SMTPUTF8"], 42),
        (["SIZE=0"], 0),
        (["SIZE=99999999999999999999"], 99999999999999999999),
        (["SIZE=abc"], 0),
        (["SIZE=-5"], 0),
        (["SIZE=1e3"], 0),
        (["SIZE="], 0),
        (["SIZE"], 0),
        (["BODY=8BITMIME"], 0),
        (["XSIZE=10"], 0),
    ],
)
def test_declared_size_reads_the_size_parameter(options: list[str], expected: int) -> None:
    assert declared_size(options) == expected


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "\uff11\uff12", "1\u00b3"])
def test_declared_size_ignores_non_ascii_digits(value: str) -> None:
    # RFC 1870 §3: size-value ::= 1*20DIGIT, ASCII digits only; `"²".isdigit()` is True in Python.
    assert declared_size([f"SIZE={value}"]) == 0


@given(st.lists(st.text(max_size=30), max_size=5))
def test_declared_size_never_raises_and_is_never_negative(options: list[str]) -> None:
    assert declared_size(options) >= 0


@given(st.integers(min_value=0, max_value=10**20), st.lists(st.sampled_from(["BODY=7BIT", "SMTPUTF8"])))
def test_declared_size_finds_any_ascii_size_value(size: int, others: list[str]) -> None:
    assert declared_size([*others, f"SIZE={size}"]) == size


def test_policy_replies_carry_matching_enhanced_classes() -> None:
    replies = [value for value in vars(policy).values() if isinstance(value, SmtpReply)]
    assert len(replies) >= 10
    for reply in replies:
        assert reply.enhanced.split(".")[0] == str(reply.code)[0], reply
