"""SPF (RFC 7208): is the connecting IP allowed to send for the MAIL FROM (or HELO) domain?

pyspf evaluates the policy; every DNS question it asks goes through our `DnsResolver`, so the
configured nameservers and timeouts apply and tests can answer from a loopback server. pyspf looks
DNS up through its module-level `DNSLookup` hook (the same hook its own test harness replaces); we
install a dispatcher there that uses the resolver of the current check, carried in a ContextVar, and
falls back to pyspf's own lookup when no check of ours is running.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass

import spf as pyspf

from whymail.dnsresolve import DnsNotFound, DnsResolver, DnsTempError

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")

# RFC 7208 §6.2: when the domain gives no usable exp=, the receiver supplies the explanation.
DEFAULT_EXPLANATION = "the sending host is not authorised by the domain's SPF record"

# RFC 7208 §4.6.4: at least 20 seconds for the whole evaluation.
DEFAULT_TIMEOUT = 20.0

log = logging.getLogger(__name__)

_current_resolver: contextvars.ContextVar[DnsResolver | None] = contextvars.ContextVar(
    "whymail_spf_resolver", default=None
)
_pyspf_lookup = pyspf.DNSLookup


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The outcome of check_host() for one identity."""

    result: str  # one of RESULTS
    domain: str  # the domain whose policy was evaluated (MAIL FROM domain, or HELO for a null sender)
    scope: str  # "mailfrom", or "helo" when MAIL FROM was null (RFC 7208 §2.4)
    identity: str  # the checked address: the MAIL FROM address or postmaster@<helo>
    explanation: str  # exp= text on fail, otherwise pyspf's short description of the result


def _rdata_value(qtype: str, rdata):
    """An rdata in the shape pyspf's dnspython driver produces."""
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        # A null MX (RFC 7505) has the root as exchange; "" makes pyspf skip it.
        return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
    if qtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)
    if qtype in ("TXT", "SPF"):
        return tuple(rdata.strings)  # bytes; pyspf glues the strings itself (RFC 7208 §3.3)
    return rdata.to_text()


def _dns_lookup(name: str, qtype: str, strict=True, timeout=None):
    """pyspf's DNSLookup hook: [((name, type), value), ...] for the records of `name`."""
    resolver = _current_resolver.get()
    if resolver is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    try:
        answers = resolver.query_sync(name, qtype)
    except DnsNotFound:
        return []  # NXDOMAIN and "no such type" are alike to SPF: both count as void lookups
    except DnsTempError as exc:
        raise pyspf.TempError(f"DNS {exc}") from None
    return [((name, qtype), _rdata_value(qtype, rdata)) for rdata in answers]


pyspf.DNSLookup = _dns_lookup


def _strip_brackets(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address


def check_spf_sync(
    resolver: DnsResolver,
    ip: str,
    mail_from: str,
    helo: str,
    *,
    receiver: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> SpfResult:
    """Blocking SPF check (runs DNS lookups); `check_spf` runs it in a thread."""
    mail_from = _strip_brackets(mail_from)
    token = _current_resolver.set(resolver)
    try:
        try:
            query = pyspf.query(i=ip, s=mail_from, h=helo, receiver=receiver, querytime=timeout)
        except pyspf.PermError as exc:  # an unparsable client address
            return SpfResult("permerror", "", "mailfrom", mail_from, str(exc))
        query.set_default_explanation(DEFAULT_EXPLANATION)
        try:
            result, _code, explanation = query.check()
        except Exception as exc:
            # pyspf raises plain Exception("Invalid query") and AssertionError("Too many levels of
            # recursion") for states it considers impossible; the record is at fault, not the mail.
            log.exception("pyspf failed on %s from %s", mail_from or helo, ip)
            return SpfResult(
                "permerror", query.o.lower(), query.ident, query.s, f"SPF evaluation error: {exc!r}"
            )
    finally:
        _current_resolver.reset(token)
    if result == "ambiguous":  # only reported in pyspf's "harsh" mode, which we do not use
        result = "permerror"
    return SpfResult(
        result=result,
        domain=query.o.lower(),
        scope=query.ident,
        identity=query.s,
        explanation=explanation or "",
    )


async def check_spf(
    resolver: DnsResolver,
    ip: str,
    mail_from: str,
    helo: str,
    *,
    receiver: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> SpfResult:
    """Check SPF for the client `ip`: the MAIL FROM identity, or postmaster@`helo` when MAIL FROM is
    null (RFC 7208 §2.4). `receiver` is the %{r} macro (our host name); `timeout` bounds the whole
    evaluation (RFC 7208 §4.6.4)."""
    return await asyncio.to_thread(
        check_spf_sync, resolver, ip, mail_from, helo, receiver=receiver, timeout=timeout
    )
