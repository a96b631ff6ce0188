"""Postfix's `smtp-sink` (a real, independent SMTP server) on a free loopback port, for tests that
want a second opinion on what our client puts on the wire.

    with PostfixSink() as sink:
        ...  # deliver to sink.host:sink.port
        messages = sink.wait_for_messages(3)
        assert sink.wait_for_sessions(1) == 1

It runs `smtp-sink -c -d <dir>/%Y%m%d%H%M%S. 127.0.0.1:<port> <backlog>` (plus `-u nobody` when we are
root, which smtp-sink requires). `-d` writes one file per mail transaction: smtp-sink's own
X-Client-Addr/X-Helo-Args/X-Mail-Args/X-Rcpt-Args lines and a three-line Received header, then the
message as received (dot-unstuffed, LF line ends), then one empty line. `-c` prints running counters
(`sess=N quit=N mesg=N`) on stdout, which go to a file and tell how many sessions ended.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SMTP_SINK = "/usr/sbin/smtp-sink"
_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


@dataclass(frozen=True, slots=True)
class DumpedMessage:
    """One transaction as smtp-sink dumped it; `data` is the message with CRLF line ends restored."""

    mail_from: str
    rcpt_tos: list[str]
    helo: str
    data: bytes
    path: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _strip_brackets(value: str) -> str:
    value = value.strip().split(" ", 1)[0]  # X-Mail-Args may carry parameters after the address
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def parse_dump(path: Path) -> DumpedMessage:
    """Split a `-d` dump file into smtp-sink's envelope lines and the message."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    mail_from, helo, rcpts = "", "", []
    index = 0
    while index < len(lines):
        line = lines[index].decode("utf-8", "replace")
        index += 1
        if line.startswith("X-Mail-Args:"):
            mail_from = _strip_brackets(line.split(":", 1)[1])
        elif line.startswith("X-Rcpt-Args:"):
            rcpts.append(_strip_brackets(line.split(":", 1)[1]))
        elif line.startswith("X-Helo-Args:"):
            helo = line.split(":", 1)[1].strip()
        elif line.startswith("Received:"):
            index += 2  # the header's two continuation lines end smtp-sink's part
            break
    body_lines = lines[index:]
    # The file ends with "\n" + one added empty line: drop the empty line and the final split piece.
    if body_lines and body_lines[-1] == b"":
        body_lines = body_lines[:-1]
    if body_lines and body_lines[-1] == b"":
        body_lines = body_lines[:-1]
    data = b"".join(line + b"\r\n" for line in body_lines)
    return DumpedMessage(mail_from, rcpts, helo, data, path)


class PostfixSink:
    """Postfix's smtp-sink on 127.0.0.1, dumping every message into a temporary directory."""

    def __init__(
        self, *, hostname: str = "smtp-sink.test", extra_args: list[str] | None = None, host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.hostname = hostname
        self.host = host
        self.port = port
        self._fixed_port = port
        self.extra_args = list(extra_args or [])
        self.directory = Path(tempfile.mkdtemp(prefix="whymail-smtp-sink-"))
        self.dump_dir = self.directory / "dump"
        self._counters = self.directory / "counters.txt"
        self._process: subprocess.Popen | None = None
        self._baseline = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        command = [SMTP_SINK, "-c", "-h", self.hostname, "-d", f"{self.dump_dir}/%Y%m%d%H%M%S."]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        return [*command, *self.extra_args, f"{self.host}:{self.port}", "64"]

    def start(self, deadline: float = 10.0) -> PostfixSink:
        # smtp-sink runs as `nobody` when we are root: it must reach and write the dump directory.
        self.directory.chmod(0o755)
        self.dump_dir.mkdir()
        self.dump_dir.chmod(0o777)
        for _attempt in range(5):  # the free port may be taken between our probe and its bind
            self.port = self._fixed_port or _free_port()
            with self._counters.open("wb") as out:
                self._process = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.PIPE)
            if self._wait_listening(time.monotonic() + deadline):
                break
        else:
            raise RuntimeError("smtp-sink did not start")
        # The readiness probe was a session too: count from the moment smtp-sink has seen its end.
        self._baseline = self._wait_counter(0, 1, time.monotonic() + deadline)
        return self

    def _wait_listening(self, until: float) -> bool:
        assert self._process is not None
        while time.monotonic() < until:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as probe:
                    probe.recv(512)  # the 220 greeting: smtp-sink is serving, not just bound
                    probe.sendall(b"QUIT\r\n")
                    probe.recv(512)
                return True
            except OSError:
                time.sleep(0.02)  # poll interval while smtp-sink binds; bounded by `until`
        self.stop()
        raise RuntimeError(f"smtp-sink did not accept connections on {self.address}")

    def counters(self) -> tuple[int, int, int]:
        """The latest (sessions, quits, messages) smtp-sink printed."""
        found = _COUNTERS.findall(self._counters.read_bytes()) if self._counters.exists() else []
        if not found:
            return 0, 0, 0
        sess, quit_, mesg = found[-1]
        return int(sess), int(quit_), int(mesg)

    def _wait_counter(self, which: int, at_least: int, until: float) -> int:
        while True:
            value = self.counters()[which]
            if value >= at_least or time.monotonic() >= until:
                return value
            time.sleep(0.02)

    def wait_for_sessions(self, at_least: int, timeout: float = 10.0) -> int:
        """Sessions ended since start (the readiness probe excluded), once at least `at_least` have."""
        return self._wait_counter(0, self._baseline + at_least, time.monotonic() + timeout) - self._baseline

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[DumpedMessage]:
        """The dumped messages, oldest first, once smtp-sink has counted `count` and written them all."""
        until = time.monotonic() + timeout
        self._wait_counter(2, count, until)
        while True:
            files = sorted(self.dump_dir.rglob("*.*"), key=lambda p: p.stat().st_mtime_ns)
            messages = [parse_dump(p) for p in files]
            complete = all(p.read_bytes().endswith(b"\n\n") for p in files)
            if (len(messages) >= count and complete) or time.monotonic() >= until:
                return messages
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostfixSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
