"""DMARC (RFC 7489): policy records, discovery, identifier alignment and the policy outcome.

The pure parts (`parse_record`, `organizational_domain`, `evaluate`) need no DNS; `check_dmarc`
discovers the record through our resolver and evaluates it against the SPF and DKIM results.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

import idna
from publicsuffixlist import PublicSuffixList

from whymail.dnsresolve import DnsNotFound, DnsResolver, DnsTempError
from whymail.mailauth.dkim import DkimResult
from whymail.mailauth.spf import SpfResult

POLICIES = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A DMARC policy record (RFC 7489 §6.3), defaults filled in."""

    p: str
    sp: str
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str = "0"
    rf: str = "afrf"
    ri: int = 86400


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The DMARC outcome for one message."""

    result: str  # pass, fail, none, temperror, permerror
    from_domain: str = ""  # the RFC5322.From domain
    policy_domain: str = ""  # where the record was found: the From domain or its organizational domain
    record: DmarcRecord | None = None
    policy: str = "none"  # the requested policy that applies: p, or sp for a subdomain
    disposition: str = "none"  # what to do: policy, relaxed by pct sampling; "none" unless result is fail
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


# --- records --------------------------------------------------------------------------------------


def _tags(text: str) -> list[tuple[str, str]] | None:
    tags: list[tuple[str, str]] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        if not equals:
            return None
        tags.append((name.strip().lower(), value.strip()))
    return tags


def _uris(value: str) -> tuple[str, ...]:
    # RFC 7489 §6.4: comma-separated URIs, each optionally followed by "!" and a size limit.
    return tuple(uri.strip() for uri in value.split(",") if uri.strip())


def parse_record(text: str) -> DmarcRecord | None:
    """Parse a DMARC TXT record; None when it is not a valid DMARC record (RFC 7489 §6.3, §6.6.3)."""
    tags = _tags(text)
    # v=DMARC1 MUST be the first tag (RFC 7489 §6.3); compared case-sensitively as the RFC shows it.
    if not tags or tags[0] != ("v", "DMARC1"):
        return None
    values = dict(tags[1:])  # a repeated tag: the last one wins; unknown tags are ignored (§6.3)
    rua = _uris(values.get("rua", ""))
    p = values.get("p", "").lower()
    sp = values.get("sp", p).lower()
    if p not in POLICIES or sp not in POLICIES:
        # RFC 7489 §6.6.3 step 6: without a valid p (or with a bad sp), a record that names a
        # reporting address acts as p=none; any other is no DMARC record at all.
        if not any(uri.lower().startswith("mailto:") or "://" in uri for uri in rua):
            return None
        p = "none"
        sp = "none"
    pct = values.get("pct", "100")
    adkim = values.get("adkim", "r").lower()
    aspf = values.get("aspf", "r").lower()
    ri = values.get("ri", "86400")
    # §6.3: other syntax errors are discarded in favour of the defaults.
    return DmarcRecord(
        p=p,
        sp=sp,
        pct=int(pct) if pct.isdigit() and int(pct) <= 100 else 100,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        rua=rua,
        ruf=_uris(values.get("ruf", "")),
        fo=values.get("fo", "0"),
        rf=values.get("rf", "afrf"),
        ri=int(ri) if ri.isdigit() else 86400,
    )


# --- domains and alignment ------------------------------------------------------------------------


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package: no download at run time


def organizational_domain(domain: str) -> str:
    """The registered domain under the public suffix (RFC 7489 §3.2); a public suffix itself, or a
    name the list does not cover, is its own organizational domain."""
    domain = domain.lower().rstrip(".")
    return _public_suffixes().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """Identifier alignment (RFC 7489 §3.1): strict wants the same name, relaxed the same
    organizational domain."""
    identifier = identifier.lower().rstrip(".")
    from_domain = from_domain.lower().rstrip(".")
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


# --- evaluation -----------------------------------------------------------------------------------


def evaluate(
    record: DmarcRecord,
    *,
    from_domain: str,
    policy_domain: str,
    spf: SpfResult | None,
    dkim: list[DkimResult],
    rand: Callable[[], float] = random.random,
) -> DmarcResult:
    """Apply `record` (found at `policy_domain`) to a message from `from_domain`. `rand` returns a
    float in [0, 1) for the pct sampling (RFC 7489 §6.6.4); tests pass a fixed one."""
    from_domain = from_domain.lower().rstrip(".")
    spf_aligned = spf is not None and spf.result == "pass" and aligned(spf.domain, from_domain, record.aspf)
    dkim_aligned = any(d.result == "pass" and aligned(d.domain, from_domain, record.adkim) for d in dkim)
    # §6.3 sp: the subdomain policy applies when the record came from the organizational domain
    # and the From domain is below it.
    policy = record.sp if from_domain != policy_domain else record.p
    common = {
        "from_domain": from_domain,
        "policy_domain": policy_domain,
        "record": record,
        "policy": policy,
        "spf_aligned": spf_aligned,
        "dkim_aligned": dkim_aligned,
    }
    if spf_aligned or dkim_aligned:
        return DmarcResult(result="pass", **common)
    # A check that could not finish might have produced the aligned pass: the verdict is not final.
    pending = (
        spf is not None and spf.result == "temperror" and aligned(spf.domain, from_domain, record.aspf)
    ) or any(d.result == "temperror" and aligned(d.domain, from_domain, record.adkim) for d in dkim)
    if pending:
        return DmarcResult(
            result="temperror", reason="an aligned SPF or DKIM check hit a DNS error", **common
        )
    disposition = policy
    reason = "no aligned SPF or DKIM pass"
    # §6.6.4: a message outside the pct sample gets the next weaker policy (reject -> quarantine).
    if record.pct < 100 and rand() * 100 >= record.pct:
        disposition = _WEAKER[policy]
        reason += f"; outside the pct={record.pct} sample"
    return DmarcResult(result="fail", disposition=disposition, reason=reason, **common)


async def _fetch_record(resolver: DnsResolver, domain: str) -> DmarcRecord | None:
    """The DMARC record at _dmarc.<domain>, None when there is no single valid one (§6.6.3)."""
    try:
        texts = await resolver.txt(f"_dmarc.{domain}")
    except DnsNotFound:
        return None
    # Records that do not start with v=DMARC1 are discarded; more than one left means none.
    candidates = [t for t in texts if t.replace(" ", "").startswith("v=DMARC1")]
    if len(candidates) != 1:
        return None
    return parse_record(candidates[0])


async def discover_policy(resolver: DnsResolver, from_domain: str) -> tuple[DmarcRecord | None, str]:
    """(record, the domain it was found at), trying the From domain, then its organizational domain
    (RFC 7489 §6.6.3). Raises DnsTempError when a lookup fails temporarily."""
    from_domain = from_domain.lower().rstrip(".")
    record = await _fetch_record(resolver, from_domain)
    if record is not None:
        return record, from_domain
    org = organizational_domain(from_domain)
    if org != from_domain:
        record = await _fetch_record(resolver, org)
        if record is not None:
            return record, org
    return None, ""


async def check_dmarc(
    resolver: DnsResolver,
    from_domain: str,
    *,
    spf: SpfResult | None,
    dkim: list[DkimResult],
    rand: Callable[[], float] = random.random,
) -> DmarcResult:
    """Discover the policy of `from_domain` and evaluate the SPF and DKIM results against it."""
    from_domain = from_domain.lower().rstrip(".")
    if not from_domain:
        return DmarcResult(result="permerror", reason="no usable RFC5322.From domain")
    try:
        record, policy_domain = await discover_policy(resolver, from_domain)
    except DnsTempError as exc:
        return DmarcResult(result="temperror", from_domain=from_domain, reason=f"policy lookup: {exc}")
    if record is None:
        return DmarcResult(result="none", from_domain=from_domain, reason="no DMARC record")
    return evaluate(
        record, from_domain=from_domain, policy_domain=policy_domain, spf=spf, dkim=dkim, rand=rand
    )


# --- the author domain ----------------------------------------------------------------------------


def author_domain(message: bytes) -> str:
    """The RFC5322.From domain DMARC is about (RFC 7489 §6.6.1). ValueError when there is no From,
    more than one From field, or addresses in several domains: DMARC cannot be applied then."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(message, headersonly=True)
    fields = headers.get_all("From") or []
    if not fields:
        raise ValueError("no From header field")
    if len(fields) > 1:
        raise ValueError("more than one From header field")
    addresses = [
        address for _name, address in getaddresses([str(field) for field in fields]) if "@" in address
    ]
    domains = {address.rpartition("@")[2].strip().rstrip(".").lower() for address in addresses}
    domains.discard("")
    if len(domains) != 1:
        raise ValueError("From has no address with a domain" if not domains else "From names several domains")
    (domain,) = domains
    if not domain.isascii():
        domain = idna.encode(domain, uts46=True).decode("ascii")
    return domain
