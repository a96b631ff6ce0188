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
"""

from __future__ import annotations

import socket
import threading

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _ZoneResolver(BaseResolver):
    def __init__(self) -> None:
        self.records: list[RR] = []
        self.servfail: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        name = str(qname).lower()
        with self.lock:
            self.queries.append((name.rstrip("."), qtype))
            if name.rstrip(".") in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            known = False
            for rr in self.records:
                if str(rr.rname).lower() != name:
                    continue
                known = True
                if qtype == "ANY" or QTYPE[rr.rtype] == qtype or QTYPE[rr.rtype] == "CNAME":
                    reply.add_answer(rr)
            if not known:
                reply.header.rcode = RCODE.NXDOMAIN
        return reply


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        return port
    raise RuntimeError("no free port for the test DNS server")


class ZoneServer:
    """Loopback DNS server; `address` is "127.0.0.1:port" for `dns.nameservers`."""

    def __init__(self) -> None:
        self._resolver = _ZoneResolver()
        self.port = _free_port()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._servers = [
            DNSServer(self._resolver, address="127.0.0.1", port=self.port, tcp=tcp, logger=quiet)
            for tcp in (False, True)
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

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
