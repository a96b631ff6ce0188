"""Enhanced status codes on every reply (whymail.smtp.replies) and the one reply to DATA (outcome_reply)."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from whymail.smtp import policy
from whymail.smtp.replies import SmtpReply, with_enhanced_code
from whymail.smtp.server import outcome_reply
from whymail.store.models import DeliveryOutcome

_ENHANCED_PREFIX = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(\s|$)", re.ASCII)


def _has_enhanced_code(line: str) -> bool:
    """`line` is `code[ -]class.subject.detail ...` with the class equal to the code's first digit."""
    match = re.match(r"^(\d{3})[ -]([245])\.\d{1,3}\.\d{1,3}( |$)", line, re.ASCII)
    return bool(match) and match.group(1)[0] == match.group(2)


# --- with_enhanced_code -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stock", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("503 Error: need MAIL command", "503 5.5.1 Need MAIL command first"),
        ("503 Error: need RCPT command", "503 5.5.1 Need RCPT command first"),
        ("503 Error: nested MAIL command", "503 5.5.1 Sender already specified"),
        ("552 Error: Too much mail data", "552 5.3.4 Message size exceeds fixed maximum message size"),
        (
            "552 Error: message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
        ),
        ("500 Error: bad syntax", "500 5.5.2 Syntax error"),
        ('500 Error: command "FOO" not recognized', '500 5.5.2 command "FOO" not recognized'),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
        ("252 Cannot VRFY user", "252 2.5.0 Cannot VRFY user"),
        ("555 MAIL FROM parameters not recognized", "555 5.5.4 MAIL FROM parameters not recognized"),
        ("421 Too many connections", "421 4.7.0 Too many connections"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("250", "250 2.0.0"),
    ],
)
def test_stock_aiosmtpd_replies_get_enhanced_codes(stock: str, expected: str) -> None:
    assert with_enhanced_code(stock) == expected


@pytest.mark.parametrize(
    "line",
    [
        "553 5.1.3 Error: malformed address",
        "550 5.1.1 User unknown in local recipient table",
        "421 4.7.0 Too many commands, slow down and try again later",
        "250 2.1.5 Recipient OK",
    ],
)
def test_replies_that_carry_an_enhanced_code_are_left_alone(line: str) -> None:
    assert with_enhanced_code(line) == line


@pytest.mark.parametrize(
    "line",
    [
        "220 mx.example WhyMail ESMTP",
        "354 End data with <CR><LF>.<CR><LF>",
        "334 VXNlcm5hbWU6",
        "",
        "OK",
        "2",
    ],
)
def test_greeting_go_ahead_challenge_and_non_replies_are_left_alone(line: str) -> None:
    assert with_enhanced_code(line) == line


def test_rewritten_stock_replies_are_plain_ascii() -> None:
    # RFC 5321 §4.2: reply text is ASCII; a client that did not ask for SMTPUTF8 may choke on more.
    stock = [
        "500 Line too long (see RFC5321 4.5.3.1.6)",
        "552 Error: Too much mail data",
        "500 Error: bad syntax",
        "503 Error: need MAIL command",
        "500 Error: strict ASCII mode",
        "421 Too many connections",
    ]
    for line in stock:
        assert with_enhanced_code(line).isascii(), line
    for reply in (value for value in vars(policy).values() if isinstance(value, SmtpReply)):
        assert str(reply).isascii(), reply


def test_line_too_long_gets_500_5_5_6() -> None:
    assert with_enhanced_code("500 Line too long (see RFC5321 4.5.3.1.6)").startswith("500 5.5.6 ")


def test_multiline_continuation_keeps_its_dash() -> None:
    assert with_enhanced_code("250-first line") == "250-2.0.0 first line"


@given(st.text())
def test_any_line_never_raises(line: str) -> None:
    assert isinstance(with_enhanced_code(line), str)


_REPLY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60
)


@given(
    code=st.integers(min_value=200, max_value=599).filter(lambda c: c // 100 != 3 and c != 220),
    separator=st.sampled_from([" ", "-"]),
    text=_REPLY_TEXT,
)
def test_reply_lines_come_out_with_a_matching_enhanced_code(code: int, separator: str, text: str) -> None:
    assume(not _ENHANCED_PREFIX.match(text))  # a reply that already names one is left as it is
    line = f"{code}{separator}{text}"
    result = with_enhanced_code(line)
    assert _has_enhanced_code(result), (line, result)
    assert result.startswith(f"{code}{separator}")


@given(code=st.integers(min_value=200, max_value=599).filter(lambda c: c // 100 != 3), text=_REPLY_TEXT)
def test_rewriting_is_idempotent(code: int, text: str) -> None:
    once = with_enhanced_code(f"{code} {text}")
    assert with_enhanced_code(once) == once


@pytest.mark.parametrize(
    "line",
    [
        "000 zero",
        "600 six",
        "999",
        "2500 four digits",
        "250OK",
        "\u00b2\u00b2\u00b2 superscripts",
        "\u0662\u0665\u0660 OK",
    ],
)
def test_lines_with_codes_outside_2xx_to_5xx_come_back_unchanged(line: str) -> None:
    assert with_enhanced_code(line) == line


# --- outcome_reply ------------------------------------------------------------------------------


def _stored(uid: int = 1) -> DeliveryOutcome:
    return DeliveryOutcome(delivery_id=uuid.uuid4(), ok=True, uid=uid, mailbox_id=1)


def _refused(code: int, enhanced: str, text: str = "refused") -> DeliveryOutcome:
    return DeliveryOutcome(
        delivery_id=uuid.uuid4(), ok=False, error_code=code, error_enhanced=enhanced, error_text=text
    )


def test_all_recipients_stored_gives_250_2_0_0_with_the_queue_id() -> None:
    reply = outcome_reply([_stored(1), _stored(2)], "ABCDEF0123456789")
    assert (reply.code, reply.enhanced) == (250, "2.0.0")
    assert "ABCDEF0123456789" in reply.text


def test_every_recipient_refused_permanently_gives_that_permanent_reply() -> None:
    reply = outcome_reply([_refused(550, "5.1.1", "Recipient no longer exists")], "Q1")
    assert reply == SmtpReply(550, "5.1.1", "Recipient no longer exists")


def test_one_recipient_full_and_one_stored_gives_452_4_2_2() -> None:
    reply = outcome_reply([_stored(), _refused(452, "4.2.2", "Mailbox full, try again later")], "Q1")
    assert (reply.code, reply.enhanced) == (452, "4.2.2")
    assert reply.is_transient


def test_permanent_refusal_next_to_a_stored_copy_is_answered_as_transient() -> None:
    # A 5xx would make the client bounce the message although one recipient has it; a 4xx retries.
    reply = outcome_reply([_stored(), _refused(550, "5.1.1")], "Q1")
    assert reply == policy.TRY_AGAIN


def test_a_transient_refusal_wins_over_permanent_ones() -> None:
    reply = outcome_reply([_refused(550, "5.1.1"), _refused(451, "4.3.0", "store down")], "Q1")
    assert reply == SmtpReply(451, "4.3.0", "store down")


def test_shard_unavailable_for_every_recipient_gives_451_4_3_0() -> None:
    reply = outcome_reply([_refused(451, "4.3.0", "Mail store temporarily unavailable")] * 3, "Q1")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")


@given(
    st.lists(
        st.one_of(
            st.just(None),
            st.sampled_from([(452, "4.2.2"), (451, "4.3.0"), (550, "5.1.1"), (552, "5.3.4")]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_data_reply_is_success_only_when_every_recipient_was_stored(kinds: list) -> None:
    outcomes = [_stored() if kind is None else _refused(*kind) for kind in kinds]
    reply = outcome_reply(outcomes, "Q1")
    assert reply.is_success == all(kind is None for kind in kinds)
    someone_may_get_it = None in kinds or any(kind is not None and kind[0] < 500 for kind in kinds)
    if not reply.is_success and someone_may_get_it:
        assert reply.is_transient  # never a permanent failure for mail some recipient has or may get
    assert reply.enhanced.split(".")[0] == str(reply.code)[0]
