"""One loopback DNS server per test module; each test loads its own zone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dnsserver import ZoneServer
from whymail.dnsresolve import DnsResolver


@pytest.fixture(scope="module")
def zone_server() -> Iterator[ZoneServer]:
    with ZoneServer() as server:
        yield server


@pytest.fixture
def zone(zone_server: ZoneServer) -> Iterator[ZoneServer]:
    """The module's server, emptied for this test."""
    zone_server.set_zone("")
    zone_server.set_servfail()
    zone_server.set_timeout()
    yield zone_server


@pytest.fixture
def resolver(zone: ZoneServer) -> DnsResolver:
    # Short: some tests make the server drop queries and wait for the timeout.
    return DnsResolver([zone.address], timeout=1.0)
