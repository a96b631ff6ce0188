"""The OpenSPF RFC 7208 test suite (tests/data/spf/rfc7208-tests.yml, from the pyspf 2.0.14 sdist),
run through whymail.mailauth.spf with each scenario's zone served by the loopback DNS server.

The zone data is read the way pyspf's own harness (test/testspf.py) reads it:
- an `SPF:` record also stands for a TXT record with the same text, unless the name has any `TXT:`
  entry (RFC 4408 era data; RFC 7208 checks TXT only);
- a `NONE` value is no record (a `TXT: NONE` still turns the SPF->TXT copy off);
- a bare `TIMEOUT` entry: the types listed before it are answered, every other query for the name
  times out; entries after it are never seen. A `TIMEOUT` value times out that one type.
- where a test allows several results, any of them passes; `explanation: DEFAULT` is our default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RR, TXT, A

from tests.support.dnsserver import ZoneServer
from whymail.dnsresolve import DnsResolver
from whymail.mailauth.spf import DEFAULT_EXPLANATION, check_spf

SUITE = Path(__file__).parents[2] / "data" / "spf" / "rfc7208-tests.yml"
SCENARIOS = list(yaml.safe_load_all(SUITE.read_bytes()))

# A query the server drops costs the resolver this long; keep it short but far above loopback RTT.
TIMEOUT_SECONDS = 1.0


def _txt_strings(value) -> list[bytes]:
    strings = [value] if isinstance(value, str) else list(value)
    chunks: list[bytes] = []
    for text in strings:
        raw = text.encode("utf-8")  # as pyspf's harness does with the YAML text
        # One DNS character-string holds at most 255 octets (RFC 1035 §3.3); SPF glues them back.
        chunks.extend(raw[i : i + 255] for i in range(0, max(len(raw), 1), 255))
    if not chunks:
        # A TXT RR with no strings is malformed on the wire (RFC 1035 §3.3.14 wants one or more) and
        # dnspython rejects the whole response; one empty string glues to the same b"".
        chunks.append(b"")
    return chunks


def _rdata(rtype: str, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        preference, exchange = value
        return MX(exchange or ".", int(preference))
    if rtype == "PTR":
        return PTR(value)
    if rtype == "CNAME":
        return CNAME(value)
    if rtype in ("TXT", "SPF"):
        return TXT(_txt_strings(value))
    raise ValueError(f"record type {rtype} not in the suite")


def zone_for(zonedata: dict) -> tuple[list[RR], dict[str, set[str]]]:
    """The RRs to serve and, per name that times out, the query types still answered."""
    records: list[RR] = []
    timeouts: dict[str, set[str]] = {}
    for name, entries in zonedata.items():
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        answered: set[str] = set()
        timing_out: set[str] = set()
        for entry in entries:
            if entry == "TIMEOUT":
                timeouts[name] = answered
                break
            ((rtype, value),) = entry.items()
            if value == "TIMEOUT":
                timing_out.add(rtype)
                continue
            if value == "NONE":
                continue
            answered.add(rtype)
            records.append(RR(name, getattr(QTYPE, rtype), rdata=_rdata(rtype, value)))
            if rtype == "SPF" and not has_txt:
                records.append(RR(name, QTYPE.TXT, rdata=_rdata("TXT", value)))
                answered.add("TXT")
        if timing_out and name not in timeouts:
            timeouts[name] = {"A", "AAAA", "MX", "PTR", "TXT", "SPF", "CNAME"} - timing_out
    return records, timeouts


def _cases() -> Iterator:
    for scenario in SCENARIOS:
        for test_id, test in scenario["tests"].items():
            yield pytest.param(scenario, test, id=f"{scenario['description']}/{test_id}")


def test_suite_has_every_scenario() -> None:
    # Guards the parametrisation below against a truncated or unreadable data file.
    # The 2014.04 release: 16 scenarios, 203 tests.
    assert len(SCENARIOS) == 16
    assert sum(len(s["tests"]) for s in SCENARIOS) == 203


def test_timeout_entries_make_the_server_drop_queries() -> None:
    records, timeouts = zone_for(
        {"slow.example.net": ["TIMEOUT"], "half.example.net": [{"TXT": "x"}, "TIMEOUT"]}
    )
    assert timeouts == {"slow.example.net": set(), "half.example.net": {"TXT"}}
    assert len(records) == 1


@pytest.mark.parametrize(("scenario", "test"), list(_cases()))
async def test_rfc7208_scenario(zone_server: ZoneServer, scenario: dict, test: dict) -> None:
    records, timeouts = zone_for(scenario["zonedata"])
    zone_server.set_zone("")
    zone_server.add_records(records)
    zone_server.set_timeout()
    for name, answered in timeouts.items():
        zone_server.add_timeout(name, answered)
    resolver = DnsResolver([zone_server.address], timeout=TIMEOUT_SECONDS)

    result = await check_spf(resolver, test["host"], test["mailfrom"], test["helo"])

    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    assert result.result in expected, f"{test.get('spec')}: {result.explanation}"
    if "explanation" in test:
        wanted = DEFAULT_EXPLANATION if test["explanation"] == "DEFAULT" else test["explanation"]
        assert result.explanation == wanted
