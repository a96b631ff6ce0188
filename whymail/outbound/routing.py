"""Where to send mail for a domain: the smarthost(s), or the domain's MX hosts, as a list of hops.

A hop is one address to try: a host name (for logs, SNI and certificate checks), one of its IP
addresses, a port and the TLS policy that applies to it. The client tries the hops in order until one
takes the mail. When there is nowhere to go, `route` raises `NoRoute`, which says whether the failure
is permanent (bounce now) or temporary (try again later).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from typing import Literal

from whymail.config import RelayConfig
from whymail.dnsresolve import DnsNotFound, DnsResolver, DnsTempError

HopKind = Literal["mx", "smarthost"]
# opportunistic: STARTTLS when offered, no certificate check, clear text when it fails (RFC 7435);
# starttls: STARTTLS or nothing; implicit: TLS from the first byte (RFC 8314 §3).
TlsMode = Literal["opportunistic", "starttls", "implicit"]

# RFC 5321 §5.1 allows a configurable limit on the addresses tried (and asks for at least two).
MAX_ADDRESSES = 10


@dataclass(frozen=True, slots=True)
class Hop:
    """One server address to try."""

    host: str
    address: str
    port: int
    kind: HopKind
    tls: TlsMode
    verify: bool = False

    @property
    def label(self) -> str:
        """`host[address]:port`, as in Postfix's relay= field."""
        return f"{self.host}[{self.address}]:{self.port}"


@dataclass(frozen=True, slots=True)
class NoRoute(Exception):
    """No server to deliver to: permanent (the mail bounces) or temporary (it waits in the queue)."""

    permanent: bool
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


def _temporary(text: str) -> NoRoute:
    # 4.4.3: "directory server failure", the code for a DNS lookup that may succeed later (RFC 3463).
    return NoRoute(False, 451, "4.4.3", text)


def parse_hostport(spec: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[address]` or `[address]:port` as (host, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if spec.count(":") == 1:
        host, _, port = spec.partition(":")
        return host, int(port)
    return spec, default_port


def _ip_literal(host: str) -> str | None:
    """The address when `host` is an IP address (or an RFC 5321 §4.1.3 address literal)."""
    text = host.strip("[]")
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


async def _addresses_or_error(resolver: DnsResolver, host: str) -> list[str] | Exception:
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        return await resolver.addresses(host)
    except (DnsNotFound, DnsTempError) as exc:
        return exc


def order_mx(records: list[tuple[int, str]], rng: random.Random | None = None) -> list[str]:
    """MX hosts by preference, shuffled within each preference level (RFC 5321 §5.1 "MUST randomize").

    `rng` makes the shuffle reproducible in tests."""
    rng = rng or random.Random()
    by_pref: dict[int, list[str]] = {}
    for pref, host in records:
        if host not in by_pref.setdefault(pref, []):
            by_pref[pref].append(host)
    ordered: list[str] = []
    for pref in sorted(by_pref):
        level = list(by_pref[pref])
        rng.shuffle(level)
        ordered.extend(level)
    return ordered


def _is_null_mx(records: list[tuple[int, str]]) -> bool:
    # RFC 7505 §3: a single MX with preference 0 and the root "." as exchange means "no mail here".
    # The resolver returns the root as "" or "."; any other records alongside it make it an
    # ordinary (broken) MX set, and the unusable "." entry is dropped below.
    return len(records) == 1 and records[0][1] in ("", ".")


async def _smarthost_hops(resolver: DnsResolver, relay: RelayConfig) -> list[Hop]:
    default_port = 465 if relay.implicit_tls else 25
    if relay.implicit_tls:
        tls: TlsMode = "implicit"
    elif relay.starttls:
        tls = "starttls"
    else:
        tls = "opportunistic"
    # A certificate check only makes sense where TLS is mandatory; opportunistic TLS never verifies.
    verify = relay.verify_tls and tls != "opportunistic"
    specs = [s for s in (relay.smarthost, relay.smarthost_fallback) if s.strip()]
    hosts = [parse_hostport(spec, default_port) for spec in specs]
    found = await asyncio.gather(*(_addresses_or_error(resolver, host) for host, _ in hosts))
    hops: list[Hop] = []
    problems: list[str] = []
    for (host, port), addresses in zip(hosts, found, strict=True):
        if isinstance(addresses, Exception):
            problems.append(str(addresses))
            continue
        hops.extend(Hop(host, address, port, "smarthost", tls, verify) for address in addresses)
    if not hops:
        # A smarthost that does not resolve is our configuration problem, not the recipient's:
        # keep the mail queued (as Postfix does for relayhost) instead of bouncing it.
        raise _temporary("cannot resolve the smarthost: " + "; ".join(problems or ["no address"]))
    return hops[:MAX_ADDRESSES]


async def _mx_hops(domain: str, resolver: DnsResolver, relay: RelayConfig, rng: random.Random | None) -> list[Hop]:
    literal = _ip_literal(domain) if domain.startswith("[") else None
    if literal is not None:  # RFC 5321 §5.1 does not apply to an address literal: go straight there.
        return [Hop(domain.strip("[]"), literal, relay.mx_port, "mx", "opportunistic")]
    try:
        records = await resolver.mx(domain)
    except DnsNotFound:
        raise NoRoute(True, 550, "5.1.2", f"domain {domain} does not exist (DNS NXDOMAIN)") from None
    except DnsTempError as exc:
        raise _temporary(f"DNS lookup of the MX records of {domain} failed: {exc}") from None
    if _is_null_mx(records):
        # RFC 7505 §4.1 with the reply code of RFC 7504: mail to this domain cannot be delivered.
        raise NoRoute(True, 556, "5.1.10", f"domain {domain} does not accept mail (null MX)")
    records = [(pref, host) for pref, host in records if host not in ("", ".")]
    # RFC 5321 §5.1: no MX at all means an implicit MX of preference 0 pointing at the domain itself.
    hosts = order_mx(records, rng) if records else [domain]
    found = await asyncio.gather(*(_addresses_or_error(resolver, host) for host in hosts))
    hops: list[Hop] = []
    temporary: list[str] = []
    for host, addresses in zip(hosts, found, strict=True):
        if isinstance(addresses, DnsTempError):
            temporary.append(str(addresses))
        elif not isinstance(addresses, Exception):
            hops.extend(Hop(host, address, relay.mx_port, "mx", "opportunistic") for address in addresses)
    if hops:
        return hops[:MAX_ADDRESSES]
    if temporary:
        raise _temporary(f"DNS lookup of the mail servers of {domain} failed: {'; '.join(temporary)}")
    what = "its MX hosts have" if records else "it has no MX and"
    # RFC 5321 §5.1: MX records none of which is usable, or an unusable implicit MX, is an error.
    raise NoRoute(True, 550, "5.4.4", f"cannot route mail for {domain}: {what} no address")


async def route(
    domain: str, resolver: DnsResolver, relay: RelayConfig, *, rng: random.Random | None = None
) -> list[Hop]:
    """The hops to try, in order, for mail to `domain`; raises NoRoute when there are none."""
    if relay.smarthost.strip():
        return await _smarthost_hops(resolver, relay)
    return await _mx_hops(domain.lower().rstrip("."), resolver, relay, rng)
