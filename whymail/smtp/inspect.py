"""What happens to a message body between the final dot and the `250`, apart from storing it.

Inbound (port 25): the antivirus scan (when enabled), then SPF / DKIM / DMARC, which yield an
`Authentication-Results:` header (RFC 8601) and a disposition: deliver, deliver to Junk
(DMARC p=quarantine), refuse (p=reject, a virus), or ask the client to retry (clamd or DNS trouble,
per config). Submission: the scan, then a DKIM signature for the From domain when it has a key.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import ipaddress
import logging
from dataclasses import dataclass

from whymail.antivirus import ClamdScanner, scan_decision
from whymail.config import Config
from whymail.db.dkim_keys import DkimKeyCache
from whymail.dnsresolve import DnsResolver
from whymail.mailauth import authresults, checks, dkim
from whymail.smtp.replies import SmtpReply

log = logging.getLogger("whymail.smtp.inspect")

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True, slots=True)
class Inspection:
    """The outcome for one inbound message: a refusal, or headers to prepend and the target folder."""

    reply: SmtpReply | None = None
    headers: bytes = b""
    mailbox: str = "INBOX"
    body: bytes | None = None  # the message with forged Authentication-Results removed, when changed


def header_line(name: str, value: str) -> bytes:
    clean = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    return f"{name}: {clean}\r\n".encode("utf-8", "replace")


def from_addresses(message: bytes) -> list[str]:
    """Every address of the RFC5322.From fields, as written ([] when none can be read)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    try:
        parsed = _HEADER_PARSER.parsebytes(head)
        values = parsed.get_all("From") or []
        addresses = email.utils.getaddresses([str(v) for v in values])
    except Exception:  # a broken header is the sender's problem, not a reason to fail
        return []
    return [address.strip() for _name, address in addresses if "@" in address]


def from_domain(message: bytes) -> str | None:
    """The domain of the first RFC5322.From address, lower-cased, or None."""
    for address in from_addresses(message):
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if domain:
            return domain
    return None


class MessageInspector:
    def __init__(
        self,
        config: Config,
        *,
        scanner: ClamdScanner | None,
        resolver: DnsResolver | None,
        dkim_keys: DkimKeyCache | None,
    ) -> None:
        self._config = config
        self._scanner = scanner
        self._resolver = resolver
        self.dkim_keys = dkim_keys
        self._authserv_id = config.mailauth.authserv_id or config.server.hostname
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in config.mailauth.trusted_networks]

    def _is_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    async def _scan(self, message: bytes) -> tuple[SmtpReply | None, bytes]:
        if self._scanner is None:
            return None, b""
        result = await self._scanner.scan(message)
        decision = scan_decision(result, self._config.plugins.antivirus.on_error, self._config.server.hostname)
        if result.status != "clean":
            log.warning("antivirus: %s %s", result.status, result.signature or result.detail)
        header = header_line(*decision.header) if decision.header else b""
        return decision.reply, header

    async def inbound(self, message: bytes, *, client_ip: str, helo: str, mail_from: str) -> Inspection:
        refusal, virus_header = await self._scan(message)
        if refusal is not None:
            return Inspection(reply=refusal)
        auth = self._config.mailauth
        if self._resolver is None or not (auth.spf or auth.dkim or auth.dmarc) or self._is_trusted(client_ip):
            return Inspection(headers=virus_header)
        # RFC 8601 §5: results claiming to be ours can only be forged; they must not reach the user.
        if len(message) > 256 * 1024:  # a line-by-line pass over a large message: off the event loop
            message = await asyncio.to_thread(authresults.strip_forged_results, message, self._authserv_id)
        else:
            message = authresults.strip_forged_results(message, self._authserv_id)
        verdict = await checks.authenticate(
            message, client_ip=client_ip, helo=helo, mail_from=mail_from, resolver=self._resolver,
            config=auth, authserv_id=self._authserv_id,
        )
        if verdict.action in ("reject", "tempfail") and verdict.reply is not None:
            log.info("mail authentication: %s", verdict.action, extra={"peer": client_ip, "from": mail_from})
            return Inspection(reply=verdict.reply)
        mailbox = "Junk" if verdict.action == "junk" else "INBOX"
        return Inspection(headers=verdict.header + virus_header, mailbox=mailbox, body=message)

    async def submission(self, message: bytes) -> tuple[bytes, SmtpReply | None]:
        """Scan and sign an authenticated user's message; a refusal reply when it must not go out."""
        refusal, virus_header = await self._scan(message)
        if refusal is not None:
            return message, refusal
        message = virus_header + message
        domain = from_domain(message)
        if domain is None or self.dkim_keys is None:
            return message, None
        signatures = b""
        for key in await self.dkim_keys.keys_for(domain):
            try:
                signatures += await asyncio.to_thread(
                    dkim.sign, message, domain=domain, selector=key.selector, private_pem=key.private_pem,
                    algorithm=key.algorithm,
                )
            except Exception as exc:  # a broken key must not stop mail: send unsigned, loudly
                log.error("dkim signing for %s (selector %s) failed: %r", domain, key.selector, exc)
        return signatures + message, None
