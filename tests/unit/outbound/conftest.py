"""Fixtures for outbound delivery: a loopback DNS server, a resolver on it, SMTP sinks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dnsserver import ZoneServer
from tests.support.sink import SmtpSink
from whymail.dnsresolve import DnsResolver


@pytest.fixture(scope="module")
def zone_server() -> Iterator[ZoneServer]:
    with ZoneServer() as server:
        yield server


@pytest.fixture
def zone(zone_server: ZoneServer) -> Iterator[ZoneServer]:
    """The module's DNS server, emptied for this test."""
    zone_server.set_zone("")
    zone_server.set_servfail()
    yield zone_server


@pytest.fixture
def resolver(zone: ZoneServer) -> DnsResolver:
    return DnsResolver([zone.address], timeout=2.0)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def tls_sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=True) as server:
        yield server
