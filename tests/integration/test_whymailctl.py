"""`whymailctl` run as a real subprocess against the session's PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from whymail.auth.passwords import verify_password
from whymail.directory.snapshot import load_snapshot

CTL = [sys.executable, "-m", "whymail.cli.ctl"]
PASSWORD = "correct horse battery"

Ctl = Callable[..., subprocess.CompletedProcess[str]]


def _environment(pg_dsn: str, state_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WHYMAIL") and key not in ("DATABASE_URL", "REDIS_ADDR")
    }
    env.update(
        WHYMAIL_DB_DSN=pg_dsn,
        WHYMAIL_STATE_DIR=str(state_dir),
        WHYMAIL__AUTH__BCRYPT_ROUNDS="4",  # fast hashes; also proves the configured cost is used
        WHYMAIL_CTL_CONFIG=str(state_dir / "no-ctl-login.json"),  # database mode, whatever the machine has
    )
    return env


@pytest.fixture
def ctl_env(pg_dsn: str, tmp_path: Path) -> dict[str, str]:
    return _environment(pg_dsn, tmp_path / "state")


@pytest.fixture
def ctl(ctl_env: dict[str, str]) -> Ctl:
    """Run whymailctl with the given arguments; `stdin` text is fed to it, `env` entries override."""

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CTL, *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env={**ctl_env, **(env or {})},
            timeout=60,
        )

    return run


@pytest.fixture
def domain(unique: str) -> str:
    return f"d{unique}.example"


@pytest.fixture
def with_domain(ctl: Ctl, domain: str) -> str:
    ok(ctl("domain", "add", domain))
    return domain


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> str:
    """Assert the exit status and that stderr is exactly one `whymailctl: ...` line naming `fragments`."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("whymailctl: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def add_user(ctl: Ctl, email: str, *extra: str, password: str = PASSWORD) -> str:
    return ok(ctl("user", "add", email, "--password-stdin", *extra, stdin=password + "\n"))


def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def user_row(dsn: str, email: str) -> asyncpg.Record | None:
    rows = query(dsn, "SELECT * FROM users WHERE email = $1", email)
    return rows[0] if rows else None


# --- domains -------------------------------------------------------------------------------------


def test_domain_add_list_delete(ctl: Ctl, domain: str) -> None:
    assert ok(ctl("domain", "add", domain.upper() + ".")) == f"added domain {domain}\n"
    listing = ok(ctl("domain", "list"))
    assert listing.splitlines()[0].split() == ["DOMAIN", "STATUS", "USERS", "ALIASES"]
    assert any(line.split()[:4] == [domain, "active", "0", "0"] for line in listing.splitlines())
    as_json = json.loads(ok(ctl("--json", "domain", "list")))
    [entry] = [d for d in as_json if d["name"] == domain]
    assert entry["is_active"] is True and entry["user_count"] == 0
    assert ok(ctl("domain", "delete", domain)).startswith(f"deleted domain {domain}")
    assert domain not in ok(ctl("domain", "list"))


def test_json_flag_is_also_accepted_after_the_command(ctl: Ctl, with_domain: str) -> None:
    assert with_domain in [d["name"] for d in json.loads(ok(ctl("domain", "list", "--json")))]


def test_internationalised_domain_is_stored_as_a_label(ctl: Ctl, unique: str) -> None:
    a_label = f"bücher-{unique}".encode("idna").decode()
    assert a_label.startswith("xn--")
    assert ok(ctl("domain", "add", f"BÜCHER-{unique}.example")) == f"added domain {a_label}.example\n"


def test_duplicate_domain_is_refused(ctl: Ctl, with_domain: str) -> None:
    fails(ctl("domain", "add", with_domain), 1, f"domain {with_domain} already exists")


def test_invalid_domain_name_is_a_usage_error(ctl: Ctl) -> None:
    fails(ctl("domain", "add", "bad_name.example"), 2, "bad_name.example")


def test_deleting_an_unknown_domain_fails(ctl: Ctl, domain: str) -> None:
    fails(ctl("domain", "delete", domain), 1, f"domain {domain} does not exist")


def test_domain_with_users_is_deleted_only_with_force(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    add_user(ctl, f"alice@{with_domain}")
    ok(ctl("alias", "add", f"info@{with_domain}", f"alice@{with_domain}"))
    fails(ctl("domain", "delete", with_domain), 1, "still has 1 user", "--force")
    assert user_row(pg_dsn, f"alice@{with_domain}") is not None
    out = ok(ctl("domain", "delete", with_domain, "--force"))
    assert "1 users, 1 aliases" in out and "Maildir" in out
    assert user_row(pg_dsn, f"alice@{with_domain}") is None
    assert query(pg_dsn, "SELECT 1 FROM aliases WHERE source = $1", f"info@{with_domain}") == []


# --- users ---------------------------------------------------------------------------------------


def test_user_add_stores_a_bcrypt_hash_and_six_mailboxes(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    out = add_user(ctl, f"Alice@{with_domain.upper()}")
    email = f"alice@{with_domain}"
    assert out.startswith(f"added user {email}")
    row = user_row(pg_dsn, email)
    assert row is not None
    assert row["local_part"] == "alice" and row["role"] == "user" and row["is_active"]
    assert row["quota_bytes"] == 1_073_741_824  # limits.default_quota
    assert row["password_hash"].startswith("$2b$04$")  # auth.bcrypt_rounds from the environment
    assert verify_password(PASSWORD, row["password_hash"])
    mailboxes = query(
        pg_dsn,
        "SELECT name, special_use, uidvalidity, uidnext FROM mailboxes WHERE user_id = $1 ORDER BY id",
        row["id"],
    )
    assert [(m["name"], m["special_use"]) for m in mailboxes] == [
        ("INBOX", None),
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Archive", "\\Archive"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
    ]
    validities = [m["uidvalidity"] for m in mailboxes]
    assert len(set(validities)) == 6
    assert all(1 <= v <= 2**32 - 1 for v in validities)
    assert all(m["uidnext"] == 1 for m in mailboxes)


def test_uidvalidity_keeps_increasing_across_users(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    add_user(ctl, f"first@{with_domain}")
    add_user(ctl, f"second@{with_domain}")
    rows = query(
        pg_dsn,
        """SELECT u.email, m.uidvalidity FROM mailboxes m JOIN users u ON u.id = m.user_id
            WHERE u.email = ANY($1) ORDER BY m.id""",
        [f"first@{with_domain}", f"second@{with_domain}"],
    )
    values = [r["uidvalidity"] for r in rows]
    assert values == sorted(values) and len(set(values)) == 12


def test_user_add_with_quota_name_and_role(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    out = add_user(ctl, f"bob@{with_domain}", "--quota", "500M", "--name", "Bob Böhm", "--role", "admin")
    assert "quota 500 MiB" in out
    row = user_row(pg_dsn, f"bob@{with_domain}")
    assert row is not None
    assert (row["quota_bytes"], row["display_name"], row["role"]) == (500 * 1024**2, "Bob Böhm", "admin")


def test_user_add_with_unlimited_quota(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    assert "quota unlimited" in add_user(ctl, f"carl@{with_domain}", "--quota", "0")
    assert user_row(pg_dsn, f"carl@{with_domain}")["quota_bytes"] == 0  # type: ignore[index]


def test_smtputf8_local_part(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    add_user(ctl, f"JÖRG@{with_domain}")
    assert user_row(pg_dsn, f"jörg@{with_domain}") is not None


def test_user_in_unknown_domain_is_refused(ctl: Ctl, domain: str) -> None:
    result = ctl("user", "add", f"alice@{domain}", "--password-stdin", stdin=PASSWORD)
    fails(result, 1, f"domain {domain} does not exist")


def test_duplicate_user_is_refused(ctl: Ctl, with_domain: str) -> None:
    add_user(ctl, f"alice@{with_domain}")
    result = ctl("user", "add", f"ALICE@{with_domain}", "--password-stdin", stdin=PASSWORD)
    fails(result, 1, f"user alice@{with_domain} already exists")


@pytest.mark.parametrize(
    "address", ["no-at-sign", "two..dots@example.com", "a b@example.com", "x@bad_domain.com"]
)
def test_bad_address_is_a_usage_error(ctl: Ctl, address: str) -> None:
    fails(ctl("user", "add", address, "--password-stdin", stdin=PASSWORD), 2)


@pytest.mark.parametrize("quota", ["lots", "-1", "1X", "1.2.3G"])
def test_bad_quota_is_a_usage_error(ctl: Ctl, with_domain: str, quota: str) -> None:
    result = ctl("user", "add", f"q@{with_domain}", "--password-stdin", "--quota", quota, stdin=PASSWORD)
    fails(result, 2, "--quota", "invalid quota", quota)


@pytest.mark.parametrize(
    ("password", "reason"), [("short", "too short"), ("         ", "whitespace"), ("", "too short")]
)
def test_weak_password_is_refused(
    ctl: Ctl, pg_dsn: str, with_domain: str, password: str, reason: str
) -> None:
    fails(ctl("user", "add", f"weak@{with_domain}", "--password-stdin", stdin=password + "\n"), 2, reason)
    assert user_row(pg_dsn, f"weak@{with_domain}") is None


def test_empty_stdin_is_refused(ctl: Ctl, with_domain: str) -> None:
    fails(ctl("user", "add", f"x@{with_domain}", "--password-stdin", stdin=""), 2, "no password")


def test_without_a_terminal_the_password_must_come_from_stdin(ctl: Ctl, with_domain: str) -> None:
    fails(ctl("user", "add", f"x@{with_domain}"), 2, "--password-stdin")


def _run_on_terminal(ctl_env: dict[str, str], args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run whymailctl with a pseudo-terminal as stdin, answering each prompt in turn."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*CTL, *args], stdin=follower, stdout=follower, stderr=follower, env=ctl_env, start_new_session=True
    )
    os.close(follower)
    transcript = b""
    pending = list(answers)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            transcript += chunk
            if pending and transcript.rstrip().endswith(b":"):
                os.write(leader, pending.pop(0).encode() + b"\n")
                transcript += b"<answered>"
        elif process.poll() is not None:
            break
    status = process.wait(timeout=30)
    os.close(leader)
    return status, transcript.decode(errors="replace")


def test_password_prompt_asks_twice_without_echo(
    ctl_env: dict[str, str], pg_dsn: str, with_domain: str
) -> None:
    email = f"tty@{with_domain}"
    status, transcript = _run_on_terminal(ctl_env, ["user", "add", email], [PASSWORD, PASSWORD])
    assert status == 0, transcript
    assert "New password for" in transcript and "Repeat" in transcript
    assert PASSWORD not in transcript  # not echoed
    assert verify_password(PASSWORD, user_row(pg_dsn, email)["password_hash"])  # type: ignore[index]


def test_password_prompt_refuses_a_mismatch(ctl_env: dict[str, str], pg_dsn: str, with_domain: str) -> None:
    email = f"tty@{with_domain}"
    status, transcript = _run_on_terminal(ctl_env, ["user", "add", email], [PASSWORD, PASSWORD + "x"])
    assert status == 2, transcript
    assert "whymailctl: the passwords do not match" in transcript
    assert user_row(pg_dsn, email) is None


def test_password_change(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    email = f"alice@{with_domain}"
    add_user(ctl, email)
    old_hash = user_row(pg_dsn, email)["password_hash"]  # type: ignore[index]
    out = ok(ctl("user", "password", email, "--password-stdin", stdin="a new passphrase\n"))
    assert out == f"changed the password of {email}\n"
    new_hash = user_row(pg_dsn, email)["password_hash"]  # type: ignore[index]
    assert new_hash != old_hash
    assert verify_password("a new passphrase", new_hash)
    assert not verify_password(PASSWORD, new_hash)


def test_password_change_for_unknown_user_fails(ctl: Ctl, with_domain: str) -> None:
    result = ctl("user", "password", f"nobody@{with_domain}", "--password-stdin", stdin=PASSWORD)
    fails(result, 1, f"user nobody@{with_domain} does not exist")


def test_quota_change(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    email = f"alice@{with_domain}"
    add_user(ctl, email)
    assert ok(ctl("user", "quota", email, "2G")) == f"set the quota of {email} to 2 GiB\n"
    assert user_row(pg_dsn, email)["quota_bytes"] == 2 * 1024**3  # type: ignore[index]
    assert ok(ctl("user", "quota", email, "1.5g")) == f"set the quota of {email} to 1.5 GiB\n"
    assert ok(ctl("user", "quota", email, "0")) == f"set the quota of {email} to unlimited\n"
    assert user_row(pg_dsn, email)["quota_bytes"] == 0  # type: ignore[index]
    fails(ctl("user", "quota", email, "much"), 2, "invalid quota")
    fails(ctl("user", "quota", f"nobody@{with_domain}", "1G"), 1, "does not exist")


def test_disable_and_enable(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    email = f"alice@{with_domain}"
    add_user(ctl, email)
    assert ok(ctl("user", "disable", email)) == f"disabled {email}\n"
    assert user_row(pg_dsn, email)["is_active"] is False  # type: ignore[index]
    listing = ok(ctl("user", "list", "--domain", with_domain))
    assert listing.splitlines()[1].split()[:3] == [email, "user", "disabled"]
    assert ok(ctl("user", "enable", email)) == f"enabled {email}\n"
    assert user_row(pg_dsn, email)["is_active"] is True  # type: ignore[index]
    fails(ctl("user", "disable", f"nobody@{with_domain}"), 1, "does not exist")


def test_user_list_filters_by_domain_and_speaks_json(ctl: Ctl, with_domain: str, unique: str) -> None:
    other = f"o{unique}.example"
    ok(ctl("domain", "add", other))
    add_user(ctl, f"b@{with_domain}", "--name", "Bee")
    add_user(ctl, f"a@{with_domain}")
    add_user(ctl, f"c@{other}")
    users = json.loads(ok(ctl("--json", "user", "list", "--domain", with_domain)))
    assert [u["email"] for u in users] == [f"a@{with_domain}", f"b@{with_domain}"]
    assert users[1]["display_name"] == "Bee" and users[1]["quota_bytes"] == 1_073_741_824
    table = ok(ctl("user", "list", "--domain", with_domain)).splitlines()
    assert table[0].split() == ["EMAIL", "NAME", "ROLE", "STATUS", "QUOTA", "USED", "MESSAGES"]
    assert len(table) == 3
    everyone = ok(ctl("user", "list"))
    assert f"c@{other}" in everyone and f"a@{with_domain}" in everyone
    fails(ctl("user", "list", "--domain", f"missing{unique}.example"), 1, "does not exist")


def test_user_delete_removes_its_mailboxes(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    email = f"alice@{with_domain}"
    add_user(ctl, email)
    user_id = user_row(pg_dsn, email)["id"]  # type: ignore[index]
    out = ok(ctl("user", "delete", email))
    assert out.startswith(f"deleted user {email}")
    assert user_row(pg_dsn, email) is None
    assert query(pg_dsn, "SELECT 1 FROM mailboxes WHERE user_id = $1", user_id) == []
    fails(ctl("user", "delete", email), 1, f"user {email} does not exist")


# --- aliases -------------------------------------------------------------------------------------


def test_alias_with_several_destinations(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    add_user(ctl, f"alice@{with_domain}")
    add_user(ctl, f"bob@{with_domain}")
    out = ok(
        ctl(
            "alias",
            "add",
            f"Team@{with_domain}",
            f"alice@{with_domain},BOB@{with_domain}",
            "Friend@Gmail.com",
        )
    )
    assert (
        out == f"added alias team@{with_domain} -> alice@{with_domain}, bob@{with_domain}, friend@gmail.com\n"
    )
    [row] = query(pg_dsn, "SELECT destinations FROM aliases WHERE source = $1", f"team@{with_domain}")
    assert row["destinations"] == [f"alice@{with_domain}", f"bob@{with_domain}", "friend@gmail.com"]
    listing = ok(ctl("alias", "list", "--domain", with_domain))
    assert f"team@{with_domain}" in listing and "friend@gmail.com" in listing
    [alias] = json.loads(ok(ctl("alias", "list", "--domain", with_domain, "--json")))
    assert alias["source"] == f"team@{with_domain}" and alias["is_catch_all"] is False
    assert ok(ctl("alias", "delete", f"team@{with_domain}")) == f"deleted alias team@{with_domain}\n"
    assert json.loads(ok(ctl("--json", "alias", "list", "--domain", with_domain))) == []


def test_catch_all(ctl: Ctl, pg_dsn: str, with_domain: str) -> None:
    add_user(ctl, f"alice@{with_domain}")
    add_user(ctl, f"bob@{with_domain}")
    out = ok(ctl("alias", "add", f"@{with_domain}", f"bob@{with_domain}"))
    assert out == f"added catch-all @{with_domain} -> bob@{with_domain}\n"
    assert f"@{with_domain} (catch-all)" in ok(ctl("alias", "list"))
    snapshot = asyncio.run(_snapshot(pg_dsn))
    assert [u.email for u in snapshot.resolve(f"whoever@{with_domain}").users] == [f"bob@{with_domain}"]
    assert [u.email for u in snapshot.resolve(f"alice@{with_domain}").users] == [f"alice@{with_domain}"]
    fails(
        ctl("alias", "add", f"@{with_domain}", f"alice@{with_domain}"),
        1,
        f"catch-all @{with_domain} already exists",
    )
    assert ok(ctl("alias", "delete", f"@{with_domain}")) == f"deleted catch-all @{with_domain}\n"
    assert asyncio.run(_snapshot(pg_dsn)).resolve(f"whoever@{with_domain}").kind == "unknown_user"


async def _snapshot(dsn: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await load_snapshot(conn)
    finally:
        await conn.close()


def test_alias_errors(ctl: Ctl, with_domain: str, unique: str) -> None:
    add_user(ctl, f"alice@{with_domain}")
    ok(ctl("alias", "add", f"info@{with_domain}", f"alice@{with_domain}"))
    fails(
        ctl("alias", "add", f"info@{with_domain}", "x@example.org"),
        1,
        f"alias info@{with_domain} already exists",
    )
    fails(ctl("alias", "add", f"alice@{with_domain}", "x@example.org"), 1, "is already a user")
    fails(
        ctl("alias", "add", f"x@nope{unique}.example", "y@example.org"),
        1,
        f"domain nope{unique}.example does not exist",
    )
    fails(ctl("alias", "add", f"x@{with_domain}", "not-an-address"), 2, "destination", "not-an-address")
    fails(ctl("alias", "add", f"x@{with_domain}", f"X@{with_domain}"), 2, "cannot forward to itself")
    fails(ctl("alias", "add", "bad alias", "y@example.org"), 2)
    fails(ctl("alias", "add", f"x@{with_domain}"), 2, "DESTINATION")
    fails(ctl("alias", "delete", f"nothing@{with_domain}"), 1, f"alias nothing@{with_domain} does not exist")
    result = ctl("user", "add", f"info@{with_domain}", "--password-stdin", stdin=PASSWORD)
    fails(result, 1, f"info@{with_domain} is already an alias")


# --- configuration, database and usage errors ------------------------------------------------------


def test_missing_config_file_names_the_file(ctl: Ctl) -> None:
    fails(
        ctl("-c", "/nonexistent/whymail.yaml", "domain", "list"), 2, "/nonexistent/whymail.yaml", "not found"
    )


def test_unknown_config_key_is_named(ctl: Ctl, tmp_path: Path) -> None:
    config = tmp_path / "whymail.yaml"
    config.write_text("db:\n  dsnn: postgresql://localhost/x\n", encoding="utf-8")
    fails(ctl("--config", str(config), "domain", "list"), 2, str(config), "db.dsnn", "unknown key")


def test_config_file_values_are_used(ctl: Ctl, pg_dsn: str, with_domain: str, tmp_path: Path) -> None:
    config = tmp_path / "whymail.yaml"
    config.write_text("limits:\n  default_quota: 1048576\n", encoding="utf-8")
    email = f"cfg@{with_domain}"
    ok(ctl("-c", str(config), "user", "add", email, "--password-stdin", stdin=PASSWORD))
    assert user_row(pg_dsn, email)["quota_bytes"] == 1_048_576  # type: ignore[index]


def test_unreachable_database_is_one_line(ctl: Ctl) -> None:
    line = fails(
        ctl("domain", "list", env={"WHYMAIL_DB_DSN": "postgresql://postgres:secret@127.0.0.1:1/nowhere"}), 1
    )
    assert "cannot connect to the database at 127.0.0.1:1/nowhere" in line
    assert "secret" not in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "required"),
        (["user"], "required"),
        (["frobnicate"], "invalid choice"),
        (["user", "add"], "EMAIL"),
        (["user", "add", "a@example.com", "--role", "god"], "--role"),
        (["domain", "list", "--bogus"], "--bogus"),
    ],
)
def test_usage_errors_are_one_line(ctl: Ctl, args: list[str], fragment: str) -> None:
    fails(ctl(*args), 2, fragment)


def test_help_exits_zero(ctl: Ctl) -> None:
    result = ctl("user", "add", "--help")
    assert result.returncode == 0
    assert "--password-stdin" in result.stdout


def test_running_server_is_notified_within_a_second(
    ctl_env: dict[str, str], pg_dsn: str, domain: str
) -> None:
    async def scenario() -> float:
        conn = await asyncpg.connect(pg_dsn)
        notified = asyncio.Event()
        await conn.add_listener("whymail_directory", lambda *_: notified.set())
        try:
            process = await asyncio.create_subprocess_exec(
                *CTL,
                "domain",
                "add",
                domain,
                env=ctl_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            assert await process.wait() == 0
            finished = time.monotonic()
            await asyncio.wait_for(notified.wait(), timeout=1.0)
            return time.monotonic() - finished
        finally:
            await conn.close()

    assert asyncio.run(scenario()) < 1.0


def test_user_add_refuses_a_local_part_that_cannot_be_a_maildir(ctl, unique: str) -> None:
    domain = f"slash{unique}.test"
    assert ctl("domain", "add", domain).returncode == 0
    result = ctl("user", "add", f"sales/eu@{domain}", "--password-stdin", stdin="s3cret-pass\n")
    assert result.returncode == 2
    assert "may not contain '/'" in result.stderr
