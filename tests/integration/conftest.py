"""A live WhyMail for the integration tests: real Ray, real PostgreSQL, real sockets.

One system per test session (Ray takes seconds to start); each test makes its own domain and users
through the same directory service functions `whymailctl` uses, so tests do not share state.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import REDIS_ADDR

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TEST_PASSWORD = "correct horse battery"


@dataclass
class MailSystem:
    """Handles on the running system and helpers to set up a test's own users."""

    dsn: str
    smtp_port: int
    maildir_root: Path
    cluster: object
    runtime: object
    hostname: str = "mx.whymail.test"
    submission_port: int = 0
    smtps_port: int = 0
    http_port: int = 0
    _password_hash: str = field(default="", repr=False)

    def run(self, coro):
        return asyncio.run(coro)

    def gateway(self):
        return self.cluster.smtp_gateways[0]

    def _directory_changed(self, change) -> object:
        """Apply a directory change and wait until the SMTP gateway's cache has seen it."""
        import ray

        before = ray.get(self.gateway().directory_version.remote())
        result = self.run(change())
        after = ray.get(self.gateway().wait_directory_version.remote(before + 1, 10.0))
        assert after > before, "the SMTP gateway never saw the directory change"
        return result

    def add_domain(self, name: str) -> None:
        from whymail.directory import service

        async def change():
            conn = await asyncpg.connect(self.dsn)
            try:
                await service.add_domain(conn, name)
            finally:
                await conn.close()

        self._directory_changed(change)

    def add_user(self, email: str, *, quota_bytes: int = 0, enabled: bool = True) -> int:
        from whymail.auth.passwords import hash_password
        from whymail.directory import service

        if not self._password_hash:
            self._password_hash = hash_password(TEST_PASSWORD, rounds=4)

        async def change():
            conn = await asyncpg.connect(self.dsn)
            try:
                info = await service.add_user(conn, email, self._password_hash, quota_bytes=quota_bytes)
                if not enabled:
                    await service.set_enabled(conn, email, False)
                return info.id
            finally:
                await conn.close()

        return self._directory_changed(change)

    def add_alias(self, source: str, destinations: list[str]) -> None:
        from whymail.directory import service

        async def change():
            conn = await asyncpg.connect(self.dsn)
            try:
                await service.add_alias(conn, source, destinations)
            finally:
                await conn.close()

        self._directory_changed(change)

    def fetch(self, query: str, *args):
        async def go():
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return self.run(go())

    def messages_of(self, email: str, mailbox: str = "INBOX") -> list:
        """Rows of the user's messages in `mailbox`, by UID."""
        return self.fetch(
            """SELECT m.* FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id
                 JOIN users u ON u.id = m.user_id
                WHERE u.email = $1 AND mb.name = $2 ORDER BY m.uid""",
            email,
            mailbox,
        )

    def maildir_files(self, domain: str, local_part: str) -> list[Path]:
        base = self.maildir_root / domain / local_part
        return sorted(p for p in base.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))


@pytest.fixture(scope="session")
def dns_zone() -> Iterator:
    """The loopback DNS server every lookup of the test system goes to (MX, SPF, DKIM, DMARC)."""
    from tests.support.dnsserver import ZoneServer

    with ZoneServer() as server:
        yield server


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mx_port() -> int:
    """The port of every remote MX in the tests: each test's remote server binds its own 127.0.0.N to it."""
    return _free_port()


@pytest.fixture(scope="session")
def mail_system(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, dns_zone, mx_port: int, clamd
) -> Iterator[MailSystem]:
    import ray

    from actors.cluster import start_actors, start_ray, stop_actors
    from whymail.config import load_config
    from whymail.runtime import Runtime

    state_dir = tmp_path_factory.mktemp("whymail-state")
    env = {
        "WHYMAIL__SERVER__HOSTNAME": "mx.whymail.test",
        "WHYMAIL__SERVER__SMTP__MAX_MESSAGE_SIZE": str(12 * 1024 * 1024),
        "WHYMAIL__SERVER__SMTP__MAX_RECIPIENTS": "20",
        "WHYMAIL__LIMITS__MAX_CONNECTIONS_PER_IP": "60",
        "WHYMAIL__RAY__SHARDS": "3",
        "WHYMAIL__RAY__NAMESPACE": f"whymail-test-{uuid.uuid4().hex[:8]}",
        "WHYMAIL__LOGGING__LEVEL": "WARNING",
        "WHYMAIL__DNS__NAMESERVERS": f"[{dns_zone.address}]",
        "WHYMAIL__DNS__TIMEOUT": "2",
        "WHYMAIL__MAILAUTH__TRUSTED_NETWORKS": "[]",
        "WHYMAIL__RELAY__MX_PORT": str(mx_port),
        "WHYMAIL__RELAY__TIMEOUT": "10",
        "WHYMAIL__QUEUE__RETRY_BASE": "0.3",
        "WHYMAIL__QUEUE__RETRY_MAX_DELAY": "1",
        "WHYMAIL__QUEUE__POLL_INTERVAL": "0.5",
        "WHYMAIL__QUEUE__DELAY_WARNING": "3600",
        "WHYMAIL__AUTH__MAX_FAILURES_PER_IP": "1000",  # every client is 127.0.0.1: lock accounts, not the IP
        "WHYMAIL__PLUGINS__ANTIVIRUS__ENABLED": "true",
        "WHYMAIL__PLUGINS__ANTIVIRUS__CLAMAV_SOCKET": clamd.tcp_address,
        "WHYMAIL__REDIS__DB": "15",
    }
    config = load_config(None, env=env)
    runtime = Runtime(config=config, state_dir=str(state_dir), dsn=pg_dsn, redis_addr=REDIS_ADDR)
    runtime.maildir_root.mkdir(parents=True, exist_ok=True)
    start_ray("", config.ray.namespace)
    cluster = start_actors(
        runtime, smtp_port=0, submission_port=0, smtps_port=0, imap_port=0, imaps_port=0, http_port=0
    )
    system = MailSystem(
        dsn=pg_dsn, smtp_port=cluster.smtp_port, maildir_root=runtime.maildir_root, cluster=cluster, runtime=runtime
    )
    system.submission_port = cluster.submission_port
    system.smtps_port = cluster.smtps_port
    system.http_port = cluster.http_port
    try:
        yield system
    finally:
        stop_actors(cluster, grace=2.0)
        ray.shutdown()


@pytest.fixture
def domain(mail_system: MailSystem, unique: str) -> str:
    """A fresh local domain of this test's own."""
    name = f"t{unique}.test"
    mail_system.add_domain(name)
    return name
