"""Sender authentication of one inbound message: SPF, DKIM and DMARC, then a verdict.

`authenticate` runs the checks the config enables, writes the Authentication-Results header field
(RFC 8601) and decides what the SMTP server does with the message:

- DMARC fail with disposition reject -> "reject" (550 5.7.1), quarantine -> "junk";
- otherwise, if a DNS failure left a result open (temperror) and DMARC did not already pass, the
  config decides: on_temperror "accept" (the header says temperror) or "tempfail" (451 4.7.0);
- everything else -> "accept".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from whymail.config import MailAuthConfig
from whymail.dnsresolve import DnsResolver
from whymail.mailauth import dkim as dkim_checks
from whymail.mailauth.authresults import dkim_resinfo, dmarc_resinfo, render_header, spf_resinfo
from whymail.mailauth.dkim import DkimResult
from whymail.mailauth.dmarc import DmarcResult, author_domain, check_dmarc
from whymail.mailauth.spf import SpfResult, check_spf
from whymail.smtp.replies import SmtpReply

ACTIONS = ("accept", "junk", "reject", "tempfail")
AMBIGUOUS_FROM_REPLY = SmtpReply(550, "5.7.1", "Message has several From authors or From fields; refused (DMARC)")


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """What the checks found and what to do with the message."""

    action: str  # one of ACTIONS
    header: bytes  # the Authentication-Results field to prepend, CRLF-terminated
    reply: SmtpReply | None = None  # for reject and tempfail
    spf: SpfResult | None = None  # None when SPF is disabled
    dkim: list[DkimResult] = field(default_factory=list)  # empty when DKIM is disabled
    dmarc: DmarcResult | None = None  # None when DMARC is disabled


def _dmarc_reject_reply(domain: str) -> SmtpReply:
    # RFC 7489 §10.3 shows 550 5.7.1 for a rejection under DMARC policy.
    return SmtpReply(
        550, "5.7.1", f"Unauthenticated email from {domain}: DMARC policy of {domain} rejects this message"
    )


TEMPFAIL_REPLY = SmtpReply(451, "4.7.0", "Sender authentication hit a temporary DNS failure, try again later")


def _has_temperror(spf: SpfResult | None, dkim: list[DkimResult], dmarc: DmarcResult | None) -> bool:
    return (
        (spf is not None and spf.result == "temperror")
        or any(d.result == "temperror" for d in dkim)
        or (dmarc is not None and dmarc.result == "temperror")
    )


def decide(
    spf: SpfResult | None, dkim: list[DkimResult], dmarc: DmarcResult | None, on_temperror: str
) -> tuple[str, SmtpReply | None]:
    """The action and reply for a set of results (pure; see the module docstring)."""
    if dmarc is not None and dmarc.result == "fail":
        if dmarc.disposition == "reject":
            return "reject", _dmarc_reject_reply(dmarc.from_domain)
        if dmarc.disposition == "quarantine":
            return "junk", None
    dmarc_passed = dmarc is not None and dmarc.result == "pass"
    if not dmarc_passed and on_temperror == "tempfail" and _has_temperror(spf, dkim, dmarc):
        return "tempfail", TEMPFAIL_REPLY
    return "accept", None


async def _no_spf() -> None:
    return None


async def _no_dkim() -> list[DkimResult]:
    return []


async def authenticate(
    message: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: DnsResolver,
    config: MailAuthConfig,
    authserv_id: str,
    rand: Callable[[], float] = random.random,
) -> AuthVerdict:
    """Run the enabled checks on a received message and decide its fate. `authserv_id` names us in
    the header (config.authserv_id, else the server host name); `rand` drives DMARC pct sampling.
    Call `strip_forged_results` on the message first (RFC 8601 §5)."""
    authserv_id = authserv_id or config.authserv_id
    spf_task = (
        check_spf(resolver, client_ip, mail_from, helo, receiver=authserv_id) if config.spf else _no_spf()
    )
    dkim_task = dkim_checks.verify(message, resolver) if config.dkim else _no_dkim()
    spf, dkim = await asyncio.gather(spf_task, dkim_task)

    dmarc: DmarcResult | None = None
    ambiguous = False
    if config.dmarc:
        try:
            from_domain = author_domain(message)
        except ValueError as exc:
            dmarc = DmarcResult(result="permerror", reason=str(exc))
            ambiguous = "more than one" in str(exc) or "several domains" in str(exc)
        else:
            dmarc = await check_dmarc(resolver, from_domain, spf=spf, dkim=dkim, rand=rand)

    resinfos: list[str] = []
    if spf is not None:
        resinfos.append(spf_resinfo(spf))
    resinfos.extend(dkim_resinfo(d) for d in dkim)
    if dmarc is not None:
        resinfos.append(dmarc_resinfo(dmarc))
    action, reply = decide(spf, dkim, dmarc, config.on_temperror)
    if config.dmarc and ambiguous:
        # RFC 7489 §6.6.1: with several authors no single policy applies; such messages are
        # typically rejected — otherwise a second From would switch DMARC off for a forged one.
        action, reply = "reject", AMBIGUOUS_FROM_REPLY
    return AuthVerdict(
        action=action,
        header=render_header(authserv_id, resinfos),
        reply=reply,
        spf=spf,
        dkim=dkim,
        dmarc=dmarc,
    )
