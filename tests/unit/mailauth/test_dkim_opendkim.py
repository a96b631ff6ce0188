"""Interoperability with OpenDKIM's library through /usr/sbin/opendkim-testmsg.

opendkim-testmsg has no option for a nameserver or a key file: libopendkim asks libc's resolver,
which reads /etc/resolv.conf and only talks to port 53. So each run happens in a private mount
namespace (`unshare --mount`, we are root) where a temporary resolv.conf is bind-mounted over
/etc/resolv.conf, naming a loopback address on which our ZoneServer listens on port 53. The real
/etc/resolv.conf is never touched, and the 127.x.y.z address is picked at random so that parallel
runs do not meet.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.dnsserver import ZoneServer
from whymail.dnsresolve import DnsResolver
from whymail.mailauth.dkim import dns_txt_record, generate_key, sign, verify

TESTMSG = "/usr/sbin/opendkim-testmsg"

MESSAGE = (
    b"From: Carol <carol@interop.test>\r\n"
    b"To: Dave <dave@example.net>\r\n"
    b"Subject: OpenDKIM interop\r\n"
    b"Date: Tue, 02 Jan 2024 09:30:00 +0000\r\n"
    b"Message-ID: <interop-1@interop.test>\r\n"
    b"\r\n"
    b"Two libraries, one signature.\r\n"
)


@dataclass
class LibcDns:
    server: ZoneServer
    resolv_conf: Path

    def run(self, args: list[str], message: bytes) -> subprocess.CompletedProcess:
        """Run a command whose libc resolver asks only our server."""
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", script, str(self.resolv_conf), *args]
        return subprocess.run(command, input=message, capture_output=True, timeout=60, check=False)


def _start_on_port_53() -> ZoneServer:
    rng = random.Random()
    for _ in range(20):
        host = f"127.{rng.randint(64, 126)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        try:
            return ZoneServer(host=host, port=53).start()
        except OSError:
            continue
    raise RuntimeError("no free loopback address for a DNS server on port 53")


@pytest.fixture(scope="module")
def libc_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibcDns]:
    server = _start_on_port_53()
    resolv_conf = tmp_path_factory.mktemp("resolv") / "resolv.conf"
    resolv_conf.write_text(f"nameserver {server.host}\noptions timeout:2 attempts:2\n")
    try:
        yield LibcDns(server, resolv_conf)
    finally:
        server.stop()


@pytest.fixture
def keys(libc_dns: LibcDns) -> dict[str, tuple[str, str]]:
    """Fresh keys, published at rsa._domainkey / ed._domainkey.interop.test."""
    made = {"rsa": generate_key("rsa"), "ed25519": generate_key("ed25519")}
    libc_dns.server.set_zone(
        dns_txt_record("rsa", "interop.test", "rsa", made["rsa"][1])
        + "\n"
        + dns_txt_record("ed", "interop.test", "ed25519", made["ed25519"][1])
    )
    return made


@pytest.fixture
def resolver(libc_dns: LibcDns) -> DnsResolver:
    return DnsResolver([libc_dns.server.address], timeout=2.0)


@pytest.mark.parametrize(("algorithm", "selector"), [("rsa", "rsa"), ("ed25519", "ed")])
def test_opendkim_verifies_our_signature(
    libc_dns: LibcDns, keys: dict, algorithm: str, selector: str
) -> None:
    header = sign(
        MESSAGE, domain="interop.test", selector=selector, private_pem=keys[algorithm][0], algorithm=algorithm
    )
    before = len(libc_dns.server.queries)

    good = libc_dns.run([TESTMSG], header + MESSAGE)
    assert (good.returncode, good.stderr) == (0, b"")
    # The key really came from our server, not from somewhere else.
    assert (f"{selector}._domainkey.interop.test", "TXT") in libc_dns.server.queries[before:]

    bad = libc_dns.run([TESTMSG], header + MESSAGE.replace(b"one signature", b"two signatures"))
    assert bad.returncode != 0
    assert b"Bad signature" in bad.stderr


async def test_we_verify_an_opendkim_signature(
    libc_dns: LibcDns, keys: dict, resolver: DnsResolver, tmp_path: Path
) -> None:
    key_file = tmp_path / "rsa.private"
    key_file.write_text(keys["rsa"][0])
    made = libc_dns.run([TESTMSG, "-C", "-d", "interop.test", "-s", "rsa", "-k", str(key_file)], MESSAGE)
    assert made.returncode == 0, made.stderr
    signed = made.stdout
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(MESSAGE)
    # opendkim-testmsg always signs with rsa-sha1, which RFC 8301 §3.1 forbids verifiers to accept:
    # by default that is a permerror; allowed explicitly, the signature itself must check out.
    (strict,) = await verify(signed, resolver)
    assert (strict.result, strict.algorithm) == ("permerror", "rsa-sha1")
    (lenient,) = await verify(signed, resolver, accept_rsa_sha1=True)
    assert (lenient.result, lenient.domain, lenient.selector) == ("pass", "interop.test", "rsa")

    (tampered,) = await verify(
        signed.replace(b"OpenDKIM interop", b"OpenDKIM intercept"), resolver, accept_rsa_sha1=True
    )
    assert tampered.result == "fail"
