"""`whymail serve` and `whymailctl` as a user runs them: real processes, real signals, real clients."""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

READY = re.compile(r"WhyMail ready: SMTP on [\d.]+:(\d+)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHYMAIL", "RAY_ADDRESS"))}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def _start_server(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "whymail.cli.main", *args], stdout=out, stderr=subprocess.STDOUT, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)  # polling a log file: the process offers no other readiness signal
    proc.kill()
    pytest.fail(f"server not ready in 120 s:\n{log.read_text()[-3000:]}")


def _ctl(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whymail.cli.ctl", *args], input=stdin, capture_output=True, text=True,
        env=env, timeout=120,
    )


def _deliver_until_accepted(port: int, rcpt: str, within: float) -> float:
    """Seconds until the server accepts mail for `rcpt` (a directory change becoming visible)."""
    start = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        while True:
            smtp.ehlo("client.example")
            code, _ = smtp.mail("sender@example.org")
            assert code == 250
            code, _ = smtp.rcpt(rcpt)
            if code == 250:
                code, reply = smtp.data(b"Subject: visible\r\n\r\nhi\r\n")
                assert code == 250, reply
                return time.monotonic() - start
            assert code == 550
            smtp.rset()
            assert time.monotonic() - start < within, f"{rcpt} still unknown after {within}s"
            time.sleep(0.05)


def _stop(proc: subprocess.Popen, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("server did not stop within 60 s of SIGTERM")
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "WhyMail stopped" in text
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.slow
def test_serve_with_dsn_sees_whymailctl_user_within_a_second_and_stops_on_sigterm(pg_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "whymail.yaml"
    config.write_text(
        "db:\n  dsn: ${TEST_DSN}\nlocal_domains: [serve.test]\nray:\n  shards: 2\n  namespace: serve-test\n"
    )
    env = _env(TEST_DSN=pg_dsn, WHYMAIL_STATE_DIR=str(tmp_path / "state"))
    proc, port = _start_server(["-c", str(config), "serve", "--smtp-port", "0", "--submission-port", "0", "--smtps-port", "0", "--http-port", "0", "--imap-port", "0", "--imaps-port", "0"], env, tmp_path / "serve.log")
    try:
        added = _ctl(["-c", str(config), "user", "add", "carol@serve.test", "--password-stdin"], env, "s3cret-pass\n")
        assert added.returncode == 0, added.stderr
        assert _deliver_until_accepted(port, "carol@serve.test", within=1.5) < 1.5
        rows = subprocess.run(
            ["psql", pg_dsn, "-tAc",
             "SELECT count(*) FROM messages m JOIN users u ON u.id = m.user_id WHERE u.email = 'carol@serve.test'"],
            capture_output=True, text=True, check=True,
        )
        assert rows.stdout.strip() == "1"
        maildir = tmp_path / "state" / "maildir" / "serve.test" / "carol" / "new"
        assert len(list(maildir.iterdir())) == 1
    finally:
        if proc.poll() is None:
            _stop(proc, tmp_path / "serve.log")


@pytest.fixture
def embedded_state() -> Iterator[Path]:
    """A state dir outside pytest's 0700 temp tree: the embedded PostgreSQL runs as its own user
    and must reach it, and a concurrent pytest run resets that tree's permissions."""
    path = Path(tempfile.mkdtemp(prefix="whymail-embedded-"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_serve_on_embedded_defaults_uses_its_state_dir(tmp_path: Path, embedded_state: Path) -> None:
    state = embedded_state
    env = _env(WHYMAIL_STATE_DIR=str(state), WHYMAIL__RAY__NAMESPACE="embedded-test")
    proc, port = _start_server(["serve", "--smtp-port", "0", "--submission-port", "0", "--smtps-port", "0", "--http-port", "0", "--imap-port", "0", "--imaps-port", "0"], env, tmp_path / "serve.log")
    try:
        assert (state / "pgdata" / "PG_VERSION").is_file()
        added = _ctl(["user", "add", "dave@localhost", "--password-stdin"], env, "s3cret-pass\n")
        assert added.returncode == 0, added.stderr
        _deliver_until_accepted(port, "dave@localhost", within=5)
        assert len(list((state / "maildir" / "localhost" / "dave" / "new").iterdir())) == 1
        listed = _ctl(["user", "list"], env)
        assert "dave@localhost" in listed.stdout
    finally:
        if proc.poll() is None:
            _stop(proc, tmp_path / "serve.log")


def test_serve_with_a_wrong_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  smtp:\n    prot: 25\n")
    result = subprocess.run(
        [sys.executable, "-m", "whymail.cli.main", "-c", str(config), "serve"],
        capture_output=True, text=True, env=_env(), timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "server.smtp.prot" in lines[0] and "unknown key" in lines[0]


def test_serve_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "whymail.cli.main", "-c", str(tmp_path / "nope.yaml"), "serve"],
        capture_output=True, text=True, env=_env(), timeout=60,
    )
    assert result.returncode == 2
    assert "nope.yaml: file not found" in result.stderr
