"""A real clamd for the tests, offline, with a signature database written here that knows only EICAR.

    def test_virus(clamd):
        scanner = ClamdScanner(clamd.tcp_address, timeout=5)   # or clamd.unix_path

The daemon runs in the foreground from a temporary directory holding its clamd.conf, its Unix socket
and two signature files, so neither freshclam nor the network is involved:

- `whymail-test.hdb`: `md5:size:name` of the 68-byte EICAR file (a whole file or a decoded attachment);
- `whymail-test.ndb`: the same 68 bytes anywhere in the scanned data (EICAR typed into a mail body,
  where the line ending keeps the body from being exactly the EICAR file).

clamd reports both as `<name>.UNOFFICIAL`; when both match it is the .ndb name it reports, so tests
compare against the common prefix `EICAR_SIGNATURE_PREFIX`. It is ready within a few tens of
milliseconds with so small a database; `start` polls PING on both sockets until it answers.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLAMD_BINARY = os.environ.get("WHYMAIL_TEST_CLAMD", "/usr/sbin/clamd")

# The EICAR anti-virus test file (eicar.org): harmless, and detected by every scanner by design.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_FILE_SIGNATURE = "WhyMail.Test.EICAR.File"
EICAR_TEXT_SIGNATURE = "WhyMail.Test.EICAR.Text"
EICAR_SIGNATURE_PREFIX = "WhyMail.Test.EICAR"

STREAM_MAX_LENGTH = 30 * 1024 * 1024  # above smtp.max_message_size (25 MiB), like a real deployment


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clamd_answers_ping(family: int, address: str | tuple[str, int]) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(address)
            conn.sendall(b"zPING\0")
            return conn.recv(16) == b"PONG\0"
    except OSError:
        return False


class ClamdServer:
    """One clamd process on 127.0.0.1:<free port> and on a Unix socket in `directory`."""

    def __init__(self, directory: Path, stream_max_length: int = STREAM_MAX_LENGTH) -> None:
        self.directory = directory
        self.stream_max_length = stream_max_length
        self.port = 0
        self.unix_path = str(directory / "clamd.sock")
        self.log_path = directory / "clamd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_signatures()

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, deadline_seconds: float = 30.0) -> None:
        """Start clamd and return once it answers PING on both sockets (a fresh port if one was taken)."""
        if self.running:
            return
        for _attempt in range(3):
            if not self.port or not self._port_is_free(self.port):
                self.port = _free_tcp_port()
            self._write_config()
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [CLAMD_BINARY, f"--config-file={self.directory / 'clamd.conf'}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_until_ready(deadline_seconds):
                return
            self.stop()
        raise RuntimeError(f"clamd did not start; its log:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Stop clamd (SIGTERM, then SIGKILL if it lingers) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _wait_until_ready(self, deadline_seconds: float) -> bool:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if not self.running:
                return False  # exited: a bad config or the port was taken meanwhile
            if _clamd_answers_ping(socket.AF_INET, ("127.0.0.1", self.port)) and _clamd_answers_ping(
                socket.AF_UNIX, self.unix_path
            ):
                return True
            time.sleep(0.02)  # polling the readiness condition above, not waiting for time to pass
        return False

    @staticmethod
    def _port_is_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    def _write_signatures(self) -> None:
        database = self.directory / "db"
        database.mkdir(exist_ok=True)
        md5 = hashlib.md5(EICAR).hexdigest()
        (database / "whymail-test.hdb").write_text(f"{md5}:{len(EICAR)}:{EICAR_FILE_SIGNATURE}\n")
        # .ndb: name:target type (0 = any):offset (* = anywhere):hex bytes
        (database / "whymail-test.ndb").write_text(f"{EICAR_TEXT_SIGNATURE}:0:*:{EICAR.hex()}\n")

    def _write_config(self) -> None:
        tmp = self.directory / "tmp"
        tmp.mkdir(exist_ok=True)
        # Run as whoever starts it (root included: clamd only switches user when `User` is set).
        lines = [
            "Foreground yes",
            f"TCPSocket {self.port}",
            "TCPAddr 127.0.0.1",
            f"LocalSocket {self.unix_path}",
            "FixStaleSocket yes",
            f"DatabaseDirectory {self.directory / 'db'}",
            f"TemporaryDirectory {tmp}",
            "LogSyslog no",
            "LogTime yes",
            f"StreamMaxLength {self.stream_max_length}",
            "ScanMail yes",
            "Bytecode no",
            "SelfCheck 0",
            "MaxThreads 4",
            "ReadTimeout 30",
            "CommandReadTimeout 10",
        ]
        (self.directory / "clamd.conf").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    """A running clamd for the whole session; a test that stops it must start it again."""
    server = ClamdServer(tmp_path_factory.mktemp("clamd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
