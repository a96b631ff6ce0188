"""SPF through our resolver: identities, scopes, DNS failures (the RFC 7208 suite is beside this)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.dnsserver import ZoneServer
from whymail.dnsresolve import DnsNotFound, DnsResolver, DnsTempError
from whymail.mailauth.spf import DEFAULT_EXPLANATION, check_spf

ZONE = """
example.test.        IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
helo.example.test.   IN TXT "v=spf1 ip4:198.51.100.7 -all"
soft.example.test.   IN TXT "v=spf1 ~all"
exp.example.test.    IN TXT "v=spf1 -all exp=why.example.test"
why.example.test.    IN TXT "%{i} may not send for %{d}"
inc.example.test.    IN TXT "v=spf1 include:broken.example.test -all"
"""


async def test_authorised_ip_passes_for_the_mail_from_domain(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(ZONE)
    result = await check_spf(resolver, "192.0.2.10", "alice@example.test", "mx.other.test")
    assert (result.result, result.domain, result.scope) == ("pass", "example.test", "mailfrom")
    assert result.identity == "alice@example.test"


async def test_other_ip_fails_with_the_default_explanation(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(ZONE)
    result = await check_spf(resolver, "203.0.113.5", "<alice@Example.test>", "mx.other.test")
    assert result.result == "fail"
    assert result.domain == "example.test"
    assert result.explanation == DEFAULT_EXPLANATION


async def test_exp_modifier_gives_the_domains_explanation(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(ZONE)
    result = await check_spf(resolver, "203.0.113.5", "bob@exp.example.test", "mx.other.test")
    assert result.result == "fail"
    assert result.explanation == "203.0.113.5 may not send for exp.example.test"


async def test_null_mail_from_checks_postmaster_at_helo(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(ZONE)
    result = await check_spf(resolver, "198.51.100.7", "", "helo.example.test")
    assert (result.result, result.domain, result.scope) == ("pass", "helo.example.test", "helo")
    assert result.identity == "postmaster@helo.example.test"


async def test_softfail_and_none(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(ZONE)
    assert (await check_spf(resolver, "192.0.2.1", "a@soft.example.test", "h.test")).result == "softfail"
    assert (await check_spf(resolver, "192.0.2.1", "a@nothing.example.test", "h.test")).result == "none"


async def test_include_of_a_domain_without_policy_is_permerror(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    zone.set_zone(ZONE)  # RFC 7208 §5.2: include of a domain with no record is permerror
    result = await check_spf(resolver, "192.0.2.1", "a@inc.example.test", "h.test")
    assert result.result == "permerror"


async def test_servfail_is_temperror(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(ZONE)
    zone.set_servfail("example.test")
    result = await check_spf(resolver, "192.0.2.10", "alice@example.test", "h.test")
    assert result.result == "temperror"


async def test_dropped_query_is_temperror_after_the_resolver_timeout(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    zone.set_zone(ZONE)
    zone.set_timeout("example.test")
    started = time.monotonic()
    result = await check_spf(resolver, "192.0.2.10", "alice@example.test", "h.test")
    assert result.result == "temperror"
    assert time.monotonic() - started >= resolver.timeout * 0.9


async def test_unparsable_client_ip_is_permerror(zone: ZoneServer, resolver: DnsResolver) -> None:
    result = await check_spf(resolver, "not-an-ip", "alice@example.test", "h.test")
    assert result.result == "permerror"


def test_query_sync_tells_nxdomain_nodata_and_cname_loops_apart(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    # Zone-file lines start in column 0: a leading blank means "same owner as the line before".
    zone.set_zone(
        "host.example.test.   IN A     192.0.2.1\n"
        "alias.example.test.  IN CNAME host.example.test.\n"
        "loop.example.test.   IN CNAME loop.example.test.\n"
    )
    assert [r.address for r in resolver.query_sync("alias.example.test", "A")] == ["192.0.2.1"]
    assert resolver.query_sync("host.example.test", "TXT") == []
    with pytest.raises(DnsNotFound):
        resolver.query_sync("missing.example.test", "A")
    with pytest.raises(DnsNotFound):
        resolver.query_sync("loop.example.test", "A")
    zone.set_servfail("host.example.test")
    with pytest.raises(DnsTempError):
        resolver.query_sync("host.example.test", "A")


async def test_concurrent_checks_each_use_their_own_resolver(zone: ZoneServer, resolver: DnsResolver) -> None:
    # pyspf has one module-level DNS hook; the resolver of each check travels in a ContextVar.
    zone.set_zone('example.test. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n')
    with ZoneServer() as other:
        other.set_zone('example.test. IN TXT "v=spf1 -all"\n')
        other_resolver = DnsResolver([other.address], timeout=1.0)
        checks = [
            check_spf(resolver if i % 2 == 0 else other_resolver, "192.0.2.10", "a@example.test", "h.test")
            for i in range(20)
        ]
        results = await asyncio.gather(*checks)
    assert [r.result for r in results] == ["pass", "fail"] * 10
