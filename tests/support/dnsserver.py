"""A small authoritative DNS server on loopback for the tests (dnslib), fed from zone-file lines.

    with ZoneServer() as dns:
        dns.set_zone('''
            example.test.        300 IN MX  10 mx.example.test.
            mx.example.test.     300 IN A   127.0.0.1
            example.test.        300 IN TXT "v=spf1 ip4:127.0.0.1 -all"
        ''')
        resolver = DnsResolver([dns.address])

It answers UDP and TCP on the same port. Names it does not know get NXDOMAIN, names it knows without
the type asked get an empty NOERROR answer, and names in `servfail` get SERVFAIL (a temporary error).
A CNAME is followed inside the zone, as an authoritative server does (RFC 1034 §4.3.2 step 3a), so a
resolver sees the whole chain; a loop is answered with the chain up to the repeated name.
`set_timeout` makes the server ignore queries for a name (all types, or all but some), which the
client sees as a timeout. `add_records` takes dnslib RRs built in code, for data zone-file syntax
cannot carry (control characters, raw bytes in TXT strings, odd characters in labels).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

from dnslib import QTYPE, RCODE, RR, DNSError
from dnslib.server import BaseResolver, DNSLogger, DNSServer

# A CNAME chain longer than this is answered as far as it goes (RFC 1034 §3.6.2: loops are errors).
_MAX_CHAIN = 16


class _NoReply(DNSError):
    """Raised by the resolver to drop a query: dnslib's handler logs DNSError and sends nothing."""


class _ZoneResolver(BaseResolver):
    def __init__(self) -> None:
        self.records: list[RR] = []
        self.servfail: set[str] = set()
        # name -> the query types still answered; every other type is dropped (a timeout).
        self.timeouts: dict[str, frozenset[str]] = {}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        name = str(qname).lower()
        with self.lock:
            self.queries.append((name.rstrip("."), qtype))
            answered = self.timeouts.get(name.rstrip("."))
            if answered is not None and qtype not in answered:
                raise _NoReply(f"dropping {name} {qtype}")
            if name.rstrip(".") in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if not self._answer(reply, name, qtype):
                reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def _answer(self, reply, name: str, qtype: str) -> bool:
        """Add the records of `name` (following CNAMEs); False when the first name is unknown."""
        seen: set[str] = set()
        first = True
        while name not in seen and len(seen) < _MAX_CHAIN:
            seen.add(name)
            owned = [rr for rr in self.records if str(rr.rname).lower() == name]
            if not owned:
                return not first
            first = False
            target = None
            for rr in owned:
                rtype = QTYPE[rr.rtype]
                if qtype == "ANY" or rtype == qtype or rtype == "CNAME":
                    reply.add_answer(rr)
                if rtype == "CNAME" and qtype not in ("CNAME", "ANY"):
                    target = str(rr.rdata.label).lower()
            if target is None:
                return True
            name = target
        return True


def _free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host`."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind((host, port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        return port
    raise RuntimeError("no free port for the test DNS server")


class ZoneServer:
    """Loopback DNS server; `address` is "127.0.0.1:port" for `dns.nameservers`.

    `host` and `port` are for clients that cannot be told a port (libc's resolver only asks port 53):
    e.g. ZoneServer(host="127.0.53.7", port=53), an address of the loopback /8 that nothing else uses.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self._resolver = _ZoneResolver()
        self.host = host
        self.port = port if port is not None else _free_port(host)
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._servers = [
            DNSServer(self._resolver, address=host, port=self.port, tcp=tcp, logger=quiet)
            for tcp in (False, True)
        ]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def queries(self) -> list[tuple[str, str]]:
        return list(self._resolver.queries)

    def set_zone(self, text: str) -> None:
        """Replace every record with the zone-file lines in `text` (absolute names)."""
        records = RR.fromZone(text) if text.strip() else []
        with self._resolver.lock:
            self._resolver.records = list(records)

    def add(self, text: str) -> None:
        records = RR.fromZone(text)
        with self._resolver.lock:
            self._resolver.records.extend(records)

    def add_records(self, records: Iterable[RR]) -> None:
        """Add dnslib RRs built in code (for rdata that zone-file text cannot express)."""
        with self._resolver.lock:
            self._resolver.records.extend(records)

    def set_timeout(self, *names: str, answered: Iterable[str] = ()) -> None:
        """Never answer queries for `names` except those of the types in `answered`; replaces the
        previous set of timing-out names. The client sees a DNS timeout."""
        kept = frozenset(t.upper() for t in answered)
        with self._resolver.lock:
            self._resolver.timeouts = {n.lower().rstrip("."): kept for n in names}

    def add_timeout(self, name: str, answered: Iterable[str] = ()) -> None:
        """Like `set_timeout` for one more name, keeping the others."""
        with self._resolver.lock:
            self._resolver.timeouts[name.lower().rstrip(".")] = frozenset(t.upper() for t in answered)

    def set_servfail(self, *names: str) -> None:
        with self._resolver.lock:
            self._resolver.servfail = {n.lower().rstrip(".") for n in names}

    def start(self) -> ZoneServer:
        for server in self._servers:
            server.start_thread()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()

    def __enter__(self) -> ZoneServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
