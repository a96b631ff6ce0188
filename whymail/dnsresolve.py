"""DNS lookups for mail routing and the SPF/DKIM/DMARC checks, through one configurable resolver.

`dns.nameservers` in the config (host or host:port) replaces /etc/resolv.conf, which is how the
tests point every lookup at their loopback DNS server. Errors are split the way mail needs them:
`DnsNotFound` (NXDOMAIN: permanent) versus `DnsTempError` (timeout, SERVFAIL: try again later);
a name that exists without records of the type asked gives an empty list.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.resolver

from whymail.config import DnsConfig


class DnsError(Exception):
    """A lookup that produced no usable answer."""


class DnsNotFound(DnsError):
    """The name does not exist (NXDOMAIN): a permanent condition."""


class DnsTempError(DnsError):
    """Timeout, SERVFAIL or no reachable server: the answer may come later."""


def _split_server(spec: str) -> tuple[str, int]:
    spec = spec.strip()
    if spec.startswith("["):  # [v6]:port
        host, _, port = spec[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if spec.count(":") == 1:
        host, _, port = spec.partition(":")
        return host, int(port)
    return spec, 53


class DnsResolver:
    """Async lookups (MX, A/AAAA, TXT, PTR) plus blocking ones for libraries that run in threads."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = 5.0, *, cache: bool = True) -> None:
        self.timeout = timeout
        self.nameservers = list(nameservers or [])
        self._async = dns.asyncresolver.Resolver(configure=not self.nameservers)
        self._sync = dns.resolver.Resolver(configure=not self.nameservers)
        for resolver in (self._async, self._sync):
            if self.nameservers:
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(host, port)
                    for host, port in (_split_server(s) for s in self.nameservers)
                ]
            resolver.lifetime = timeout
            resolver.timeout = min(timeout, 2.0)
            # Answers are kept for their TTL (at most `max_ttl`): the queue asks for the same MX for
            # every round, the checks for the same SPF/DMARC records for every message of a sender.
            resolver.cache = dns.resolver.LRUCache(10_000) if cache else None

    @classmethod
    def from_config(cls, config: DnsConfig) -> DnsResolver:
        return cls(config.nameservers, config.timeout)

    @staticmethod
    def _texts(answer) -> list[str]:
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]

    async def _query(self, name: str, rdtype: str):
        try:
            return await self._async.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsNotFound(f"{name}: no such domain") from None
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise DnsTempError(f"{name} {rdtype}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name} {rdtype}: {exc}") from None

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """MX records sorted by preference, hosts without the trailing dot. A null MX (RFC 7505)
        comes back as [(0, ".")]; no MX at all as []."""
        answer = await self._query(domain, "MX")
        records = [(int(r.preference), r.exchange.to_text(omit_final_dot=True).lower()) for r in answer]
        return sorted(records, key=lambda rec: rec[0])

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host`; DnsNotFound when neither type exists because the name does not."""
        found: list[str] = []
        missing = 0
        temp: DnsTempError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                found.extend(r.to_text() for r in await self._query(host, rdtype))
            except DnsNotFound:
                missing += 1
            except DnsTempError as exc:
                temp = exc
        if not found and temp is not None:
            raise temp
        if not found and missing == 2:
            raise DnsNotFound(f"{host}: no such host")
        return found

    async def txt(self, name: str) -> list[str]:
        return self._texts(await self._query(name, "TXT"))

    def lookup_sync(self, name: str, rdtype: str):
        """Blocking lookup (for pyspf and dkimpy, run in a thread): the rdata list, [] when absent."""
        try:
            return list(self._sync.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name} {rdtype}: {type(exc).__name__}") from None

    def txt_sync(self, name: str) -> list[str]:
        return self._texts(self.lookup_sync(name, "TXT"))

    def query_sync(self, name: str, rdtype: str):
        """Blocking lookup that keeps NXDOMAIN apart: the rdata list ([] when the name exists without
        that type), DnsNotFound for NXDOMAIN and for a CNAME chain that loops or never ends (a
        permanent condition, RFC 1034 §3.6.2), DnsTempError for timeouts and server failures."""
        try:
            return list(self._sync.resolve(name, rdtype, search=False))
        except dns.resolver.NXDOMAIN:
            raise DnsNotFound(f"{name}: no such domain") from None
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.NoNameservers as exc:
            # dnspython reports an unusable answer (here: a looping chain) as "no nameserver left".
            errors = [error[3] for error in exc.kwargs.get("errors") or []]
            if errors and all(isinstance(error, dns.message.ChainTooLong) for error in errors):
                raise DnsNotFound(f"{name}: CNAME chain loops or is too long") from None
            raise DnsTempError(f"{name} {rdtype}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name} {rdtype}: {type(exc).__name__}") from None
