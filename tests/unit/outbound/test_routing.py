"""Routing: MX order (RFC 5321 §5.1), implicit MX, null MX (RFC 7505), DNS errors, smarthosts."""

from __future__ import annotations

import random

import pytest

from tests.support.dnsserver import ZoneServer
from whymail.config import RelayConfig
from whymail.dnsresolve import DnsResolver
from whymail.outbound.routing import Hop, NoRoute, order_mx, parse_hostport, route

MX_PORT = 2525


def lines(text: str) -> str:
    """Zone lines without indentation (a leading blank would mean "same owner as above")."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def relay(**kwargs) -> RelayConfig:
    return RelayConfig(mx_port=MX_PORT, **kwargs)


async def test_mx_hosts_in_preference_order_with_every_address(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(lines("""
        example.test.      300 IN MX 20 backup.example.test.
        example.test.      300 IN MX 10 primary.example.test.
        primary.example.test. 300 IN A 192.0.2.1
        primary.example.test. 300 IN A 192.0.2.2
        backup.example.test.  300 IN A 192.0.2.9
        backup.example.test.  300 IN AAAA 2001:db8::9
    """))
    hops = await route("example.test", resolver, relay())
    assert [(h.host, h.address) for h in hops] == [
        ("primary.example.test", "192.0.2.1"),
        ("primary.example.test", "192.0.2.2"),
        ("backup.example.test", "192.0.2.9"),
        ("backup.example.test", "2001:db8::9"),
    ]
    assert {(h.port, h.kind, h.tls, h.verify) for h in hops} == {(MX_PORT, "mx", "opportunistic", False)}
    assert hops[0].label == "primary.example.test[192.0.2.1]:2525"


async def test_equal_preference_order_is_random_but_reproducible(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone("\n".join(
        [f"example.test. 300 IN MX 10 mx{i}.example.test." for i in range(4)]
        + [f"mx{i}.example.test. 300 IN A 192.0.2.{i + 1}" for i in range(4)]
        + ["example.test. 300 IN MX 5 first.example.test.", "first.example.test. 300 IN A 192.0.2.100"]
    ))
    orders = set()
    for seed in range(12):
        hops = await route("example.test", resolver, relay(), rng=random.Random(seed))
        assert hops[0].host == "first.example.test"  # a better preference always comes first
        orders.add(tuple(h.host for h in hops[1:]))
        again = await route("example.test", resolver, relay(), rng=random.Random(seed))
        assert again == hops
    assert len(orders) > 1
    assert all(sorted(order) == [f"mx{i}.example.test" for i in range(4)] for order in orders)


def test_order_mx_keeps_levels_apart_and_drops_duplicates() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (10, "a"), (30, "d")]
    for seed in range(20):
        ordered = order_mx(records, random.Random(seed))
        assert sorted(ordered[:2]) == ["a", "b"] and ordered[2:] == ["c", "d"]


async def test_no_mx_uses_the_domain_itself_as_implicit_mx(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone("plain.test. 300 IN A 192.0.2.7")
    hops = await route("plain.test", resolver, relay())
    assert hops == [Hop("plain.test", "192.0.2.7", MX_PORT, "mx", "opportunistic")]


async def test_null_mx_is_a_permanent_556_5_1_10(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(lines("""
        nomail.test. 300 IN MX 0 .
        nomail.test. 300 IN A 192.0.2.8
    """))
    with pytest.raises(NoRoute) as caught:
        await route("nomail.test", resolver, relay())
    assert (caught.value.permanent, caught.value.code, caught.value.enhanced) == (True, 556, "5.1.10")
    assert "null MX" in caught.value.text


async def test_nxdomain_is_permanent_5_1_2(zone: ZoneServer, resolver: DnsResolver) -> None:
    with pytest.raises(NoRoute) as caught:
        await route("missing.test", resolver, relay())
    assert caught.value.permanent and caught.value.enhanced == "5.1.2"
    assert "missing.test" in caught.value.text


async def test_servfail_is_temporary(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone("broken.test. 300 IN A 192.0.2.1")
    zone.set_servfail("broken.test")
    with pytest.raises(NoRoute) as caught:
        await route("broken.test", resolver, relay())
    assert not caught.value.permanent and caught.value.code == 451 and caught.value.enhanced.startswith("4.")


async def test_mx_host_with_temporary_dns_error_makes_the_route_temporary(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    zone.set_zone(lines("""
        example.test.    300 IN MX 10 mx.example.test.
        mx.example.test. 300 IN A 192.0.2.1
    """))
    zone.set_servfail("mx.example.test")
    with pytest.raises(NoRoute) as caught:
        await route("example.test", resolver, relay())
    assert not caught.value.permanent


async def test_mx_hosts_without_addresses_are_a_permanent_error(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone("example.test. 300 IN MX 10 nowhere.example.test.")
    with pytest.raises(NoRoute) as caught:
        await route("example.test", resolver, relay())
    assert caught.value.permanent and caught.value.enhanced == "5.4.4"


async def test_an_unresolvable_mx_host_is_skipped(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(lines("""
        example.test.      300 IN MX 10 gone.example.test.
        example.test.      300 IN MX 20 mx2.example.test.
        mx2.example.test.  300 IN A 192.0.2.2
    """))
    hops = await route("example.test", resolver, relay())
    assert [h.host for h in hops] == ["mx2.example.test"]


async def test_address_literal_goes_straight_to_the_address(zone: ZoneServer, resolver: DnsResolver) -> None:
    before = len(zone.queries)
    hops = await route("[192.0.2.5]", resolver, relay())
    assert [(h.address, h.port, h.kind) for h in hops] == [("192.0.2.5", MX_PORT, "mx")]
    assert len(zone.queries) == before


async def test_smarthost_and_fallback_replace_mx(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone(lines("""
        relay2.test.  300 IN A 192.0.2.20
        example.test. 300 IN MX 10 mx.example.test.
    """))
    before = len(zone.queries)
    hops = await route(
        "example.test", resolver, relay(smarthost="192.0.2.10:587", smarthost_fallback="relay2.test:2587")
    )
    assert [(h.host, h.address, h.port, h.kind) for h in hops] == [
        ("192.0.2.10", "192.0.2.10", 587, "smarthost"),
        ("relay2.test", "192.0.2.20", 2587, "smarthost"),
    ]
    assert {(h.tls, h.verify) for h in hops} == {("starttls", True)}
    assert ("example.test", "MX") not in zone.queries[before:]


async def test_smarthost_tls_modes(zone: ZoneServer, resolver: DnsResolver) -> None:
    implicit = await route("x.test", resolver, relay(smarthost="192.0.2.10", implicit_tls=True))
    assert (implicit[0].tls, implicit[0].port, implicit[0].verify) == ("implicit", 465, True)
    unverified = await route("x.test", resolver, relay(smarthost="192.0.2.10:25", verify_tls=False))
    assert (unverified[0].tls, unverified[0].verify) == ("starttls", False)
    optional = await route("x.test", resolver, relay(smarthost="192.0.2.10:25", starttls=False))
    assert (optional[0].tls, optional[0].verify) == ("opportunistic", False)


async def test_unresolvable_smarthost_is_temporary(zone: ZoneServer, resolver: DnsResolver) -> None:
    with pytest.raises(NoRoute) as caught:
        await route("example.test", resolver, relay(smarthost="relay.missing.test:25"))
    assert not caught.value.permanent and "smarthost" in caught.value.text


async def test_unresolvable_primary_smarthost_leaves_the_fallback(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.set_zone("relay2.test. 300 IN A 192.0.2.20")
    hops = await route("example.test", resolver, relay(smarthost="gone.test:25", smarthost_fallback="relay2.test:25"))
    assert [h.host for h in hops] == ["relay2.test"]


def test_parse_hostport() -> None:
    assert parse_hostport("relay.test", 25) == ("relay.test", 25)
    assert parse_hostport("relay.test:587", 25) == ("relay.test", 587)
    assert parse_hostport("[2001:db8::1]:465", 25) == ("2001:db8::1", 465)
    assert parse_hostport("[192.0.2.1]", 25) == ("192.0.2.1", 25)
