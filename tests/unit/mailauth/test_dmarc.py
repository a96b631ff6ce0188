"""DMARC: records, organizational domains, alignment, discovery and the policy outcome."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.dnsserver import ZoneServer
from whymail.dnsresolve import DnsResolver
from whymail.mailauth.dkim import DkimResult
from whymail.mailauth.dmarc import (
    DmarcRecord,
    aligned,
    author_domain,
    check_dmarc,
    evaluate,
    organizational_domain,
    parse_record,
)
from whymail.mailauth.spf import SpfResult


def spf_result(result: str, domain: str) -> SpfResult:
    return SpfResult(
        result=result, domain=domain, scope="mailfrom", identity=f"bounce@{domain}", explanation=""
    )


def dkim_result(result: str, domain: str) -> DkimResult:
    return DkimResult(result=result, domain=domain, selector="s", header_b="abcdefgh")


# --- records --------------------------------------------------------------------------------------


def test_full_record_parses_with_every_tag() -> None:
    record = parse_record(
        "v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s; aspf=s; "
        "rua=mailto:agg@example.test,mailto:other@example.net!10m; ruf=mailto:f@example.test; fo=1; ri=3600"
    )
    assert record == DmarcRecord(
        p="reject",
        sp="quarantine",
        pct=50,
        adkim="s",
        aspf="s",
        rua=("mailto:agg@example.test", "mailto:other@example.net!10m"),
        ruf=("mailto:f@example.test",),
        fo="1",
        rf="afrf",
        ri=3600,
    )


def test_defaults_sp_follows_p_and_alignment_is_relaxed() -> None:
    record = parse_record("v=DMARC1; p=quarantine")
    assert record is not None
    assert (record.sp, record.pct, record.adkim, record.aspf) == ("quarantine", 100, "r", "r")


@pytest.mark.parametrize(
    "text",
    [
        "p=reject; v=DMARC1",  # v must come first (RFC 7489 §6.3)
        "v=DMARC2; p=reject",
        "v=dmarc1; p=reject",
        "v=DMARC1",  # no p and no rua
        "v=DMARC1; p=block",
        "v=DMARC1; p=reject; sp=maybe",
        "v=DMARC1; p reject",
        "",
        "v=spf1 -all",
    ],
)
def test_invalid_records_are_no_policy(text: str) -> None:
    assert parse_record(text) is None


def test_record_without_valid_p_but_with_rua_acts_as_p_none() -> None:
    record = parse_record("v=DMARC1; p=bogus; rua=mailto:dmarc@example.test")
    assert record is not None
    assert (record.p, record.sp) == ("none", "none")  # RFC 7489 §6.6.3 step 6


def test_bad_optional_values_fall_back_to_defaults() -> None:
    record = parse_record("v=DMARC1; p=none; pct=150; adkim=x; aspf=; ri=soon; unknown=1")
    assert record is not None
    assert (record.pct, record.adkim, record.aspf, record.ri) == (100, "r", "r", 86400)


@given(st.text(max_size=80))
def test_parser_never_raises(text: str) -> None:
    record = parse_record(text)
    assert record is None or record.p in ("none", "quarantine", "reject")


# --- domains --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("mail.eu.example.com", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("Example.COM.", "example.com"),
        ("co.uk", "co.uk"),  # a public suffix is its own organizational domain
    ],
)
def test_organizational_domain_uses_the_public_suffix_list(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "from_domain", "mode", "expected"),
    [
        ("example.com", "example.com", "s", True),
        ("mail.example.com", "example.com", "s", False),
        ("mail.example.com", "example.com", "r", True),
        ("example.com", "news.example.com", "r", True),
        ("example.org", "example.com", "r", False),
        ("example.co.uk", "other.co.uk", "r", False),
        ("EXAMPLE.com", "example.COM", "s", True),
        ("", "example.com", "r", False),
    ],
)
def test_alignment(identifier: str, from_domain: str, mode: str, expected: bool) -> None:
    assert aligned(identifier, from_domain, mode) is expected


def test_author_domain_of_a_plain_from() -> None:
    assert (
        author_domain(b'From: "Eve, Ltd" <eve@News.Example.COM>\r\nTo: x@y.test\r\n\r\nhi\r\n')
        == "news.example.com"
    )


@pytest.mark.parametrize(
    "headers",
    [
        b"To: x@y.test\r\n",
        b"From: a@one.test\r\nFrom: b@two.test\r\n",
        b"From: a@one.test, b@two.test\r\n",
        b"From: undisclosed\r\n",
    ],
)
def test_author_domain_refuses_missing_or_ambiguous_from(headers: bytes) -> None:
    with pytest.raises(ValueError):
        author_domain(headers + b"\r\nbody\r\n")


# --- evaluation -----------------------------------------------------------------------------------

REJECT = DmarcRecord(p="reject", sp="reject")


def test_aligned_dkim_passes_even_when_spf_fails() -> None:
    result = evaluate(
        REJECT,
        from_domain="example.com",
        policy_domain="example.com",
        spf=spf_result("fail", "example.com"),
        dkim=[dkim_result("fail", "example.com"), dkim_result("pass", "mail.example.com")],
    )
    assert (result.result, result.dkim_aligned, result.spf_aligned) == ("pass", True, False)
    assert result.disposition == "none"


def test_aligned_spf_passes_without_dkim() -> None:
    result = evaluate(
        REJECT,
        from_domain="example.com",
        policy_domain="example.com",
        spf=spf_result("pass", "bounces.example.com"),
        dkim=[],
    )
    assert (result.result, result.spf_aligned) == ("pass", True)


def test_strict_alignment_rejects_subdomain_identifiers() -> None:
    record = DmarcRecord(p="reject", sp="reject", adkim="s", aspf="s")
    result = evaluate(
        record,
        from_domain="example.com",
        policy_domain="example.com",
        spf=spf_result("pass", "bounces.example.com"),
        dkim=[dkim_result("pass", "mail.example.com")],
    )
    assert (result.result, result.disposition) == ("fail", "reject")


def test_unaligned_passes_fail_with_the_requested_policy() -> None:
    result = evaluate(
        DmarcRecord(p="quarantine", sp="quarantine"),
        from_domain="example.com",
        policy_domain="example.com",
        spf=spf_result("pass", "mailer.example.net"),
        dkim=[dkim_result("pass", "mailer.example.net")],
    )
    assert (result.result, result.policy, result.disposition) == ("fail", "quarantine", "quarantine")


def test_sp_applies_to_subdomains_found_through_the_organizational_domain() -> None:
    record = DmarcRecord(p="reject", sp="none")
    sub = evaluate(record, from_domain="news.example.com", policy_domain="example.com", spf=None, dkim=[])
    top = evaluate(record, from_domain="example.com", policy_domain="example.com", spf=None, dkim=[])
    assert (sub.policy, sub.disposition) == ("none", "none")
    assert (top.policy, top.disposition) == ("reject", "reject")


@pytest.mark.parametrize(
    ("policy", "draw", "disposition"),
    [
        ("reject", 0.10, "reject"),  # 10 < 25: in the sample
        ("reject", 0.25, "quarantine"),  # outside: one step weaker (RFC 7489 §6.6.4)
        ("quarantine", 0.99, "none"),
        ("quarantine", 0.0, "quarantine"),
    ],
)
def test_pct_sampling_weakens_the_policy_outside_the_sample(
    policy: str, draw: float, disposition: str
) -> None:
    record = DmarcRecord(p=policy, sp=policy, pct=25)
    result = evaluate(
        record, from_domain="example.com", policy_domain="example.com", spf=None, dkim=[], rand=lambda: draw
    )
    assert (result.result, result.disposition) == ("fail", disposition)


def test_pct_100_never_draws() -> None:
    def no_draw() -> float:
        raise AssertionError("pct=100 must not sample")

    result = evaluate(
        REJECT, from_domain="example.com", policy_domain="example.com", spf=None, dkim=[], rand=no_draw
    )
    assert result.disposition == "reject"


def test_temperror_on_an_aligned_check_leaves_dmarc_open() -> None:
    result = evaluate(
        REJECT,
        from_domain="example.com",
        policy_domain="example.com",
        spf=spf_result("fail", "other.test"),
        dkim=[dkim_result("temperror", "example.com")],
    )
    assert (result.result, result.disposition) == ("temperror", "none")


def test_temperror_on_an_unaligned_check_does_not_matter() -> None:
    result = evaluate(
        REJECT,
        from_domain="example.com",
        policy_domain="example.com",
        spf=spf_result("temperror", "other.test"),
        dkim=[],
    )
    assert (result.result, result.disposition) == ("fail", "reject")


# --- discovery over DNS ---------------------------------------------------------------------------


async def test_record_at_the_from_domain_wins(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(
        '_dmarc.news.example.com. IN TXT "v=DMARC1; p=quarantine"\n'
        '_dmarc.example.com.      IN TXT "v=DMARC1; p=reject"\n'
    )
    result = await check_dmarc(resolver, "news.example.com", spf=None, dkim=[])
    assert (result.result, result.policy_domain, result.policy) == ("fail", "news.example.com", "quarantine")


async def test_falls_back_to_the_organizational_domain(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone('_dmarc.example.co.uk. IN TXT "v=DMARC1; p=reject; sp=quarantine"\n')
    result = await check_dmarc(resolver, "a.b.example.co.uk", spf=None, dkim=[])
    assert (result.result, result.policy_domain, result.disposition) == (
        "fail",
        "example.co.uk",
        "quarantine",
    )
    queried = [name for name, qtype in zone.queries if qtype == "TXT"]
    assert queried[-2:] == ["_dmarc.a.b.example.co.uk", "_dmarc.example.co.uk"]  # never the tree walk


async def test_no_record_is_none(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone('example.com. IN TXT "v=spf1 -all"\n')
    result = await check_dmarc(resolver, "example.com", spf=None, dkim=[])
    assert (result.result, result.disposition) == ("none", "none")


async def test_two_records_mean_no_policy(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(
        '_dmarc.example.com. IN TXT "v=DMARC1; p=reject"\n_dmarc.example.com. IN TXT "v=DMARC1; p=none"\n'
    )
    assert (await check_dmarc(resolver, "example.com", spf=None, dkim=[])).result == "none"


async def test_other_txt_records_beside_the_policy_are_ignored(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    zone.set_zone(
        '_dmarc.example.com. IN TXT "google-site-verification=abc"\n'
        '_dmarc.example.com. IN TXT "v=DMARC1; p=reject"\n'
    )
    assert (await check_dmarc(resolver, "example.com", spf=None, dkim=[])).disposition == "reject"


async def test_invalid_record_is_none(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone('_dmarc.example.com. IN TXT "v=DMARC1; p=everything"\n')
    assert (await check_dmarc(resolver, "example.com", spf=None, dkim=[])).result == "none"


async def test_lookup_failure_is_temperror(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone('_dmarc.example.com. IN TXT "v=DMARC1; p=reject"\n')
    zone.set_servfail("_dmarc.example.com")
    result = await check_dmarc(resolver, "example.com", spf=None, dkim=[])
    assert (result.result, result.disposition) == ("temperror", "none")


async def test_dns_pass_with_aligned_dkim(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone('_dmarc.example.com. IN TXT "v=DMARC1; p=reject"\n')
    result = await check_dmarc(resolver, "example.com", spf=None, dkim=[dkim_result("pass", "example.com")])
    assert (result.result, result.record.p if result.record else None) == ("pass", "reject")
