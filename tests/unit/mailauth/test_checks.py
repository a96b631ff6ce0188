"""authenticate() end to end: SPF, DKIM and DMARC over loopback DNS, the header and the action."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import default as default_policy

import pytest

from tests.support.dnsserver import ZoneServer
from whymail.config import MailAuthConfig
from whymail.dnsresolve import DnsResolver
from whymail.mailauth.authresults import authserv_id_of
from whymail.mailauth.checks import authenticate
from whymail.mailauth.dkim import dns_txt_record, generate_key, sign

AUTHSERV = "mx.whymail.test"
GOOD_IP = "192.0.2.25"
BAD_IP = "203.0.113.66"
PRIVATE, PUBLIC = generate_key("ed25519")

ZONE = f"""
example.com.                IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.example.com.         IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
quarantine.test.            IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.quarantine.test.     IN TXT "v=DMARC1; p=quarantine"
monitor.test.               IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.monitor.test.        IN TXT "v=DMARC1; p=none"
sampled.test.               IN TXT "v=spf1 -all"
_dmarc.sampled.test.        IN TXT "v=DMARC1; p=reject; pct=50"
mx.example.com.             IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
{dns_txt_record("sel", "example.com", "ed25519", PUBLIC)}
"""


def message(from_domain: str = "example.com", *, signed: bool = False) -> bytes:
    raw = (
        f"From: Sender <news@{from_domain}>\r\n"
        f"To: rcpt@whymail.test\r\n"
        f"Subject: hello\r\n"
        f"Date: Wed, 03 Jan 2024 12:00:00 +0000\r\n"
        f"Message-ID: <m1@{from_domain}>\r\n"
        f"\r\n"
        f"Body text.\r\n"
    ).encode()
    if signed:
        raw = sign(raw, domain=from_domain, selector="sel", private_pem=PRIVATE, algorithm="ed25519") + raw
    return raw


def config(**changes) -> MailAuthConfig:
    return MailAuthConfig(**changes)


async def run(
    resolver: DnsResolver, msg: bytes, *, ip: str = GOOD_IP, mail_from: str = "bounce@example.com", **kw
):
    cfg = kw.pop("cfg", config())
    return await authenticate(
        msg,
        client_ip=ip,
        helo="mx.example.com",
        mail_from=mail_from,
        resolver=resolver,
        config=cfg,
        authserv_id=AUTHSERV,
        **kw,
    )


@pytest.fixture
def loaded(zone: ZoneServer) -> ZoneServer:
    zone.set_zone(ZONE)
    return zone


async def test_aligned_spf_and_dkim_pass_and_are_accepted(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message(signed=True))
    assert (verdict.action, verdict.reply) == ("accept", None)
    b_tag = verdict.dkim[0].header_b
    assert verdict.header == (
        b"Authentication-Results: mx.whymail.test;\r\n"
        b"\tspf=pass smtp.mailfrom=bounce@example.com;\r\n"
        b"\tdkim=pass header.d=example.com header.s=sel header.b=" + _pvalue(b_tag) + b";\r\n"
        b"\tdmarc=pass (p=reject dis=none) header.from=example.com\r\n"
    )


def _pvalue(text: str) -> bytes:
    return (f'"{text}"' if "/" in text else text).encode()


async def test_header_is_one_well_formed_field(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message(signed=True))
    assert verdict.header.endswith(b"\r\n") and b"\r\n\r\n" not in verdict.header
    assert all(len(line) <= 78 for line in verdict.header.split(b"\r\n"))
    parsed = BytesParser(policy=default_policy).parsebytes(verdict.header + message())
    values = parsed.get_all("Authentication-Results")
    assert len(values) == 1
    assert authserv_id_of(str(values[0])) == AUTHSERV


async def test_forged_sender_under_p_reject_is_rejected_with_550(
    loaded: ZoneServer, resolver: DnsResolver
) -> None:
    verdict = await run(resolver, message(), ip=BAD_IP)
    assert verdict.action == "reject"
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert "DMARC policy of example.com rejects this message" in verdict.reply.text
    assert b"spf=fail smtp.mailfrom=bounce@example.com" in verdict.header
    assert b"dkim=none" in verdict.header
    assert b"dmarc=fail (p=reject dis=reject) header.from=example.com" in verdict.header


async def test_valid_dkim_saves_a_message_from_a_forwarder(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message(signed=True), ip=BAD_IP)  # SPF fails, aligned DKIM passes
    assert verdict.action == "accept"
    assert verdict.spf is not None and verdict.spf.result == "fail"
    assert verdict.dmarc is not None and verdict.dmarc.result == "pass"


async def test_quarantine_policy_sends_to_junk(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message("quarantine.test"), ip=BAD_IP, mail_from="b@quarantine.test")
    assert (verdict.action, verdict.reply) == ("junk", None)
    assert b"dmarc=fail (p=quarantine dis=quarantine)" in verdict.header


async def test_p_none_failure_is_accepted_and_reported(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message("monitor.test"), ip=BAD_IP, mail_from="b@monitor.test")
    assert verdict.action == "accept"
    assert b"dmarc=fail (p=none dis=none) header.from=monitor.test" in verdict.header


async def test_pct_outside_the_sample_downgrades_reject_to_junk(
    loaded: ZoneServer, resolver: DnsResolver
) -> None:
    out = await run(resolver, message("sampled.test"), mail_from="b@sampled.test", rand=lambda: 0.75)
    inside = await run(resolver, message("sampled.test"), mail_from="b@sampled.test", rand=lambda: 0.25)
    assert (out.action, inside.action) == ("junk", "reject")


async def test_no_policy_anywhere_is_accepted(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message("nowhere.test"), ip=BAD_IP, mail_from="b@nowhere.test")
    assert verdict.action == "accept"
    assert b"spf=none smtp.mailfrom=b@nowhere.test" in verdict.header
    assert b"dmarc=none header.from=nowhere.test" in verdict.header


async def test_dns_trouble_tempfails_when_configured(loaded: ZoneServer, resolver: DnsResolver) -> None:
    loaded.set_servfail("example.com")  # SPF of the aligned MAIL FROM domain cannot be checked
    verdict = await run(resolver, message(), cfg=config(on_temperror="tempfail"))
    assert verdict.action == "tempfail"
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.0")
    assert "temporary DNS failure" in verdict.reply.text


async def test_dns_trouble_is_accepted_and_marked_by_default(
    loaded: ZoneServer, resolver: DnsResolver
) -> None:
    loaded.set_servfail("example.com")
    verdict = await run(resolver, message())
    assert (verdict.action, verdict.reply) == ("accept", None)
    assert b"spf=temperror" in verdict.header
    assert b"dmarc=temperror" in verdict.header


async def test_dmarc_lookup_timeout_tempfails(loaded: ZoneServer, resolver: DnsResolver) -> None:
    loaded.set_timeout("_dmarc.example.com")
    verdict = await run(resolver, message(), ip=BAD_IP, cfg=config(on_temperror="tempfail"))
    assert verdict.action == "tempfail"
    assert verdict.dmarc is not None and verdict.dmarc.result == "temperror"


async def test_dmarc_pass_is_final_even_with_a_temperror_elsewhere(
    loaded: ZoneServer, resolver: DnsResolver
) -> None:
    loaded.set_servfail("example.com")  # SPF temperror, but the aligned DKIM signature passes
    verdict = await run(resolver, message(signed=True), cfg=config(on_temperror="tempfail"))
    assert verdict.action == "accept"
    assert b"spf=temperror" in verdict.header and b"dmarc=pass" in verdict.header


async def test_null_sender_is_checked_at_helo(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message(signed=True), mail_from="")
    assert b"spf=pass smtp.helo=mx.example.com" in verdict.header
    # The HELO domain mx.example.com aligns with example.com under relaxed alignment.
    assert verdict.dmarc is not None and verdict.dmarc.spf_aligned


async def test_message_without_from_is_a_dmarc_permerror(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, b"To: x@whymail.test\r\nSubject: no from\r\n\r\nhi\r\n")
    assert verdict.action == "accept"
    assert b"dmarc=permerror" in verdict.header


async def test_disabled_checks_are_left_out(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await run(resolver, message(signed=True), cfg=config(spf=False, dmarc=False))
    assert verdict.spf is None and verdict.dmarc is None
    assert b"spf=" not in verdict.header and b"dmarc=" not in verdict.header
    assert b"dkim=pass" in verdict.header


async def test_everything_disabled_gives_the_none_header(loaded: ZoneServer, resolver: DnsResolver) -> None:
    queries_before = len(loaded.queries)
    verdict = await run(resolver, message(), ip=BAD_IP, cfg=config(spf=False, dkim=False, dmarc=False))
    assert verdict.header == b"Authentication-Results: mx.whymail.test; none\r\n"
    assert verdict.action == "accept"
    assert len(loaded.queries) == queries_before  # not a single lookup


async def test_config_authserv_id_is_the_fallback(loaded: ZoneServer, resolver: DnsResolver) -> None:
    verdict = await authenticate(
        message(),
        client_ip=GOOD_IP,
        helo="mx.example.com",
        mail_from="bounce@example.com",
        resolver=resolver,
        config=config(authserv_id="auth.whymail.test"),
        authserv_id="",
    )
    assert verdict.header.startswith(b"Authentication-Results: auth.whymail.test;")
