"""Authentication-Results: rendering (RFC 8601 §2.2) and removal of forged instances (§5)."""

from __future__ import annotations

import pytest

from whymail.mailauth.authresults import (
    authserv_id_of,
    dkim_resinfo,
    dmarc_resinfo,
    render_header,
    spf_resinfo,
    strip_forged_results,
)
from whymail.mailauth.dkim import DkimResult
from whymail.mailauth.dmarc import DmarcRecord, DmarcResult
from whymail.mailauth.spf import SpfResult


def test_no_result_is_the_none_form() -> None:
    assert render_header("mx.whymail.test", []) == b"Authentication-Results: mx.whymail.test; none\r\n"


def test_each_result_goes_on_its_own_folded_line() -> None:
    header = render_header(
        "mx.whymail.test", ["spf=pass smtp.mailfrom=a@b.test", "dmarc=none header.from=b.test"]
    )
    assert header == (
        b"Authentication-Results: mx.whymail.test;\r\n\tspf=pass smtp.mailfrom=a@b.test;\r\n\tdmarc=none header.from=b.test\r\n"
    )


def test_authserv_id_must_be_a_token() -> None:
    with pytest.raises(ValueError):
        render_header("mx whymail", [])


def test_spf_reports_helo_for_a_null_sender() -> None:
    spf = SpfResult("pass", "helo.example.test", "helo", "postmaster@helo.example.test", "")
    assert spf_resinfo(spf) == "spf=pass smtp.helo=helo.example.test"


def test_spf_falls_back_to_the_domain_for_an_unusual_local_part() -> None:
    spf = SpfResult("fail", "example.test", "mailfrom", '"odd local"@example.test', "no")
    assert spf_resinfo(spf) == "spf=fail smtp.mailfrom=example.test"


def test_error_reasons_are_quoted_and_escaped() -> None:
    spf = SpfResult("permerror", "example.test", "mailfrom", "a@example.test", 'bad "mechanism"\\ here')
    assert (
        spf_resinfo(spf) == 'spf=permerror reason="bad \\"mechanism\\"\\\\ here" smtp.mailfrom=a@example.test'
    )


def test_dkim_properties() -> None:
    dkim = DkimResult("pass", domain="example.test", selector="s1", header_b="AbC+1234")
    assert dkim_resinfo(dkim) == "dkim=pass header.d=example.test header.s=s1 header.b=AbC+1234"
    # "/" is a tspecial (RFC 2045 §5.1): such a value must be a quoted-string.
    slashed = DkimResult("fail", domain="example.test", selector="s1", header_b="AbC+/123")
    assert dkim_resinfo(slashed) == 'dkim=fail header.d=example.test header.s=s1 header.b="AbC+/123"'
    assert dkim_resinfo(DkimResult("none")) == "dkim=none"


def test_dmarc_carries_policy_and_disposition_in_a_comment() -> None:
    dmarc = DmarcResult(
        "fail",
        from_domain="example.test",
        record=DmarcRecord(p="reject", sp="reject"),
        policy="reject",
        disposition="reject",
    )
    assert dmarc_resinfo(dmarc) == "dmarc=fail (p=reject dis=reject) header.from=example.test"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" mx.whymail.test; spf=pass", "mx.whymail.test"),
        (" (comment (nested)) MX.WhyMail.test 1; none", "MX.WhyMail.test"),
        (' "mx.whymail.test"; none', "mx.whymail.test"),
        ("\r\n\tmx.whymail.test;\r\n\tdkim=pass", "mx.whymail.test"),
        ("", ""),
    ],
)
def test_authserv_id_is_read_past_comments_and_folding(value: str, expected: str) -> None:
    assert authserv_id_of(value) == expected


def test_forged_results_with_our_id_are_removed_and_the_rest_kept_byte_for_byte() -> None:
    message = (
        b"Received: from x by y\r\n"
        b"Authentication-Results: mx.whymail.test; spf=pass smtp.mailfrom=a@forged.test\r\n"
        b"Authentication-Results: upstream.example.net;\r\n\tdkim=pass header.d=example.net\r\n"
        b"authentication-results: (sneaky) MX.WHYMAIL.TEST;\r\n"
        b"\tdmarc=pass header.from=bank.test\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Authentication-Results: mx.whymail.test; this is body text\r\n"
    )
    stripped = strip_forged_results(message, "mx.whymail.test")
    assert stripped == (
        b"Received: from x by y\r\n"
        b"Authentication-Results: upstream.example.net;\r\n\tdkim=pass header.d=example.net\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Authentication-Results: mx.whymail.test; this is body text\r\n"
    )


def test_a_message_without_forgeries_is_unchanged() -> None:
    message = b"From: a@b.test\nSubject: x\n\nbody\n"
    assert strip_forged_results(message, "mx.whymail.test") == message
