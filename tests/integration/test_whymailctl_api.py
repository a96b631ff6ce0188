"""`whymailctl` through the REST API: the real command, logged in with a token, against the running server.

The database DSN in the command's environment points nowhere, so every command that works here went
through the API (the audit log names the logged-in operator as the actor, which confirms it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.api_client import ApiClient
from tests.integration.conftest import TEST_PASSWORD, MailSystem
from whymail.auth.passwords import verify_password

CTL = [sys.executable, "-m", "whymail.cli.ctl"]
NEW_PASSWORD = "another horse battery"

Run = Callable[..., subprocess.CompletedProcess[str]]


def _ctl_factory(system: MailSystem, config: Path) -> Run:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WHYMAIL")}
    env.update(
        WHYMAIL_CTL_CONFIG=str(config),
        WHYMAIL_SERVER=f"http://127.0.0.1:{system.http_port}",
        WHYMAIL_DB_DSN="postgresql://nobody@127.0.0.1:1/nowhere",  # direct database access would fail
    )

    def run(*args: str, stdin: str = "", extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CTL, *args], input=stdin, capture_output=True, text=True,
                              env={**env, **(extra_env or {})}, timeout=120)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], status: int, fragment: str) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("whymailctl: ") and fragment in line, line
    return line


def _operator(system: MailSystem, email: str, role: str) -> None:
    system.add_user(email)
    system.fetch("UPDATE users SET role = $2 WHERE email = $1", email, role)


def _logged_in(system: MailSystem, tmp_path: Path, email: str, role: str, name: str = "ctl.json") -> Run:
    _operator(system, email, role)
    ctl = _ctl_factory(system, tmp_path / name)
    ok(ctl("login", email, "--password-stdin", stdin=TEST_PASSWORD + "\n"))
    return ctl


@pytest.fixture
def admin_ctl(mail_system: MailSystem, domain: str, tmp_path: Path) -> Run:
    return _logged_in(mail_system, tmp_path, f"root@{domain}", "admin")


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- login and logout ----------------------------------------------------------------------------

def test_login_saves_a_private_token_and_logout_revokes_it(mail_system: MailSystem, domain: str, tmp_path: Path):
    admin = f"root@{domain}"
    _operator(mail_system, admin, "admin")
    config = tmp_path / "conf" / "ctl.json"
    ctl = _ctl_factory(mail_system, config)
    out = ok(ctl("login", admin, "--password-stdin", stdin=TEST_PASSWORD + "\n"))
    assert f"as {admin} (admin)" in out and str(config) in out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["server"] == f"http://127.0.0.1:{mail_system.http_port}" and saved["token"].startswith("wm_")
    [row] = mail_system.fetch("SELECT name, revoked_at FROM api_tokens WHERE id = $1", saved["token_id"])
    assert row["name"].startswith("whymailctl@") and row["revoked_at"] is None
    assert ok(ctl("domain", "list")).splitlines()[0].split() == ["DOMAIN", "STATUS", "USERS", "ALIASES"]

    assert "logged out" in ok(ctl("logout"))
    assert not config.exists()
    [row] = mail_system.fetch("SELECT revoked_at FROM api_tokens WHERE id = $1", saved["token_id"])
    assert row["revoked_at"] is not None
    assert ApiClient(mail_system, saved["token"]).get("/api/v1/auth/me").status == 401
    fails(ctl("domain", "list"), 1, "not logged in or token expired: run whymailctl login")
    fails(ctl("logout"), 1, "not logged in")
    # A revoked token given in the environment is refused the same way.
    fails(ctl("user", "list", extra_env={"WHYMAIL_TOKEN": saved["token"]}), 1, "not logged in or token expired")


def test_wrong_password_prints_the_servers_message_and_saves_nothing(
    mail_system: MailSystem, domain: str, tmp_path: Path
):
    admin = f"root@{domain}"
    _operator(mail_system, admin, "admin")
    config = tmp_path / "ctl.json"
    ctl = _ctl_factory(mail_system, config)
    fails(ctl("login", admin, "--password-stdin", stdin="not the password\n"), 1, "wrong email or password")
    assert not config.exists()
    fails(ctl("login", "--password-stdin", stdin=TEST_PASSWORD + "\n"), 2, "EMAIL")


def test_token_from_the_environment_without_a_saved_login(admin_ctl: Run, mail_system: MailSystem, tmp_path: Path):
    token = json.loads((tmp_path / "ctl.json").read_text())["token"]
    other = _ctl_factory(mail_system, tmp_path / "absent.json")
    listed = json.loads(ok(other("--json", "domain", "list", extra_env={"WHYMAIL_TOKEN": token})))
    assert all("user_count" in d for d in listed) and listed


# --- domains, users, aliases ---------------------------------------------------------------------

def test_domain_user_alias_commands(admin_ctl: Run, mail_system: MailSystem, unique: str, domain: str):
    ctl = admin_ctl
    managed = f"m{unique}.test"
    assert ok(ctl("domain", "add", managed.upper())) == f"added domain {managed}\n"
    fails(ctl("domain", "add", managed), 1, "already exists")
    assert any(line.split()[:4] == [managed, "active", "0", "0"] for line in ok(ctl("domain", "list")).splitlines())

    bob = f"bob@{managed}"
    added = ok(ctl("user", "add", bob, "--password-stdin", "--quota", "1G", "--name", "Bob", stdin=TEST_PASSWORD + "\n"))
    assert added.startswith(f"added user {bob} (quota 1 GiB; mailboxes INBOX")
    listing = ok(ctl("user", "list", "--domain", managed)).splitlines()
    assert listing[0].split() == ["EMAIL", "NAME", "ROLE", "STATUS", "QUOTA", "USED", "MESSAGES"]
    assert listing[1].split()[:6] == [bob, "Bob", "user", "active", "1", "GiB"]
    assert ok(ctl("user", "quota", bob, "2G")) == f"set the quota of {bob} to 2 GiB\n"
    assert ok(ctl("user", "disable", bob)) == f"disabled {bob}\n"
    [row] = mail_system.fetch("SELECT quota_bytes, is_active FROM users WHERE email = $1", bob)
    assert row["quota_bytes"] == 2 * 1024**3 and row["is_active"] is False
    [listed] = json.loads(ok(ctl("user", "list", "--domain", managed, "--json")))
    assert listed["email"] == bob and listed["is_active"] is False
    ok(ctl("user", "enable", bob))
    ok(ctl("user", "password", bob, "--password-stdin", stdin=NEW_PASSWORD + "\n"))
    [row] = mail_system.fetch("SELECT password_hash, is_active FROM users WHERE email = $1", bob)
    assert row["is_active"] is True and verify_password(NEW_PASSWORD, row["password_hash"])
    fails(ctl("user", "quota", f"nobody@{managed}", "1G"), 1, f"user nobody@{managed} does not exist")
    fails(ctl("user", "password", bob, "--password-stdin", stdin="short\n"), 2, "password")

    assert ok(ctl("alias", "add", f"sales@{managed}", bob)) == f"added alias sales@{managed} -> {bob}\n"
    assert ok(ctl("alias", "add", f"@{managed}", bob)) == f"added catch-all @{managed} -> {bob}\n"
    aliases = json.loads(ok(ctl("--json", "alias", "list", "--domain", managed)))
    assert [(a["source"], a["destinations"], a["is_catch_all"]) for a in aliases] == [
        (f"@{managed}", [bob], True), (f"sales@{managed}", [bob], False)]
    assert "(catch-all)" in ok(ctl("alias", "list", "--domain", managed))
    assert ok(ctl("alias", "delete", f"sales@{managed}")) == f"deleted alias sales@{managed}\n"

    assert ok(ctl("user", "delete", bob)).startswith(f"deleted user {bob}\n")
    assert mail_system.fetch("SELECT 1 FROM users WHERE email = $1", bob) == []
    assert ok(ctl("domain", "delete", managed)).startswith(f"deleted domain {managed} (0 users, 1 aliases)")
    fails(ctl("domain", "delete", managed), 1, f"domain {managed} does not exist")
    # The changes were made by the API as the logged-in operator.
    actors = mail_system.fetch(
        "SELECT action, actor_email FROM audit_logs WHERE target_type = 'domain' AND details->>'domain' = $1 "
        "ORDER BY id", managed)
    assert [(r["action"], r["actor_email"]) for r in actors] == [
        ("domain_created", f"root@{domain}"), ("domain_deleted", f"root@{domain}")]


def test_domain_with_users_needs_force(admin_ctl: Run, mail_system: MailSystem, unique: str):
    managed = f"f{unique}.test"
    ok(admin_ctl("domain", "add", managed))
    ok(admin_ctl("user", "add", f"carol@{managed}", "--password-stdin", stdin=TEST_PASSWORD + "\n"))
    fails(admin_ctl("domain", "delete", managed), 1, "--force")
    out = ok(admin_ctl("domain", "delete", managed, "--force"))
    assert out.startswith(f"deleted domain {managed} (1 users, 0 aliases)")
    assert mail_system.fetch("SELECT 1 FROM domains WHERE name = $1", managed) == []


def test_owner_cannot_add_domains_but_manages_their_own(
    mail_system: MailSystem, domain: str, unique: str, tmp_path: Path
):
    owner = f"owner@{domain}"
    ctl = _logged_in(mail_system, tmp_path, owner, "owner")
    fails(ctl("domain", "add", f"o{unique}.test"), 1, "not allowed for your role")
    assert mail_system.fetch("SELECT 1 FROM domains WHERE name = $1", f"o{unique}.test") == []
    ok(ctl("user", "add", f"dave@{domain}", "--password-stdin", stdin=TEST_PASSWORD + "\n"))
    emails = [u["email"] for u in json.loads(ok(ctl("--json", "user", "list")))]
    assert emails == sorted([owner, f"dave@{domain}"])  # their domain only
    fails(ctl("queue", "list"), 1, "not allowed for your role")
    fails(ctl("config", "show"), 1, "not allowed for your role")
    other = f"x{unique}.test"
    mail_system.add_domain(other)
    fails(ctl("user", "list", "--domain", other), 1, f"domain {other} does not exist")


# --- queue ---------------------------------------------------------------------------------------

def _queue_row(system: MailSystem, recipient: str, status: str) -> int:
    [row] = system.fetch(
        """INSERT INTO outbound_queue (delivery_id, user_id, sender, recipient_domain, recipients, message_path,
                                      status, last_error)
           VALUES (gen_random_uuid(), NULL, '', split_part($1, '@', 2), ARRAY[$1], '.spool/00/new/none', $2,
                   'given up') RETURNING id""",
        recipient, status,
    )
    return row["id"]


def test_queue_list_retry_delete(admin_ctl: Run, mail_system: MailSystem, domain: str):
    # Bounces (empty sender) to a local address that does not exist: a retry fails for good, with no DSN.
    dead = _queue_row(mail_system, f"ghost@{domain}", "dead")
    sent = _queue_row(mail_system, f"ghost2@{domain}", "sent")
    # (The session's other tests leave thousands of sent rows: look for ours among the dead ones.)
    listed = json.loads(ok(admin_ctl("--json", "queue", "list", "--status", "dead", "--limit", "1000")))
    assert dead in {e["id"] for e in listed} and sent not in {e["id"] for e in listed}
    assert all(e["status"] == "dead" for e in listed) and "message_path" not in listed[0]
    table = ok(admin_ctl("queue", "list", "--status", "dead", "--limit", "1000")).splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "ATTEMPTS"] and table[-1].startswith("pending=")
    assert any(line.split()[:2] == [str(dead), "dead"] for line in table)
    fails(admin_ctl("queue", "list", "--status", "lost"), 2, "unknown status")

    assert ok(admin_ctl("queue", "retry", str(dead))) == "retrying 1 entry now\n"
    row = _wait_for(lambda: [r for r in mail_system.fetch("SELECT status, attempts FROM outbound_queue WHERE id = $1",
                                                          dead) if r["status"] == "failed"], "the retried attempt")
    assert row[0]["attempts"] == 1
    fails(admin_ctl("queue", "retry", str(sent)), 1, f"not found or being sent right now: {sent}")
    assert ok(admin_ctl("--json", "queue", "delete", str(dead), str(sent))) and not mail_system.fetch(
        "SELECT 1 FROM outbound_queue WHERE id = ANY($1::bigint[])", [dead, sent])
    fails(admin_ctl("queue", "delete", str(dead)), 1, f"not found or being sent right now: {dead}")
    fails(admin_ctl("queue", "delete", "abc"), 2, "queue ids are numbers")


# --- system config -------------------------------------------------------------------------------

def test_config_set_show_unset_reload(admin_ctl: Run, unique: str):
    key = f"test.ctl_{unique}"
    assert ok(admin_ctl("config", "set", key, "30")) == f"set {key} = 30\n"
    assert ok(admin_ctl("config", "set", f"{key}_text", "hello world")) == f'set {key}_text = "hello world"\n'
    shown = json.loads(ok(admin_ctl("config", "show", "--json")))
    assert shown["settings"][key] == 30 and shown["settings"][f"{key}_text"] == "hello world"
    assert shown["updated_at"]
    table = ok(admin_ctl("config", "show")).splitlines()
    assert table[0].split() == ["KEY", "VALUE"] and [key, "30"] in [line.split() for line in table]
    reload = ok(admin_ctl("config", "reload"))
    assert reload.startswith("nothing to reload") and "last changed" in reload
    assert ok(admin_ctl("config", "unset", key)) == f"removed {key}\n"
    assert key not in json.loads(ok(admin_ctl("--json", "config", "show")))["settings"]
    fails(admin_ctl("config", "set", "bad key!", "1"), 2, "invalid key")


# --- DKIM ----------------------------------------------------------------------------------------

def test_dkim_generate_list_and_activate(admin_ctl: Run, mail_system: MailSystem, domain: str):
    out = ok(admin_ctl("domain", "dkim", domain, "--algorithm", "ed25519", "--selector", "first"))
    assert f'first._domainkey.{domain}. IN TXT "v=DKIM1; k=ed25519; p=' in out
    assert "signed with it" in out  # the domain's first ed25519 key signs at once
    second = json.loads(ok(admin_ctl("--json", "domain", "dkim", domain, "--algorithm", "ed25519",
                                     "--selector", "second")))
    assert second["active"] is False and second["dns_record"].startswith("second._domainkey.")
    assert "private" not in json.dumps(second)
    fails(admin_ctl("domain", "dkim", domain, "--algorithm", "ed25519", "--selector", "second"), 1, "already exists")
    fails(admin_ctl("domain", "dkim", domain, "--selector", "bad_selector"), 2, "invalid selector")

    out = ok(admin_ctl("domain", "dkim", domain, "--activate", "second"))
    assert out == f"{domain} now signs with selector second (ed25519) within a minute\n"
    keys = json.loads(ok(admin_ctl("--json", "domain", "dkim", domain, "--list")))
    assert [(k["selector"], k["is_active"]) for k in keys] == [("first", False), ("second", True)]
    assert all("private" not in name for key in keys for name in key)
    table = ok(admin_ctl("domain", "dkim", domain, "--list")).splitlines()
    assert table[0].split()[:3] == ["SELECTOR", "ALGORITHM", "STATUS"]
    fails(admin_ctl("domain", "dkim", domain, "--activate", "third"), 1, "DKIM key not found")
    [row] = mail_system.fetch("SELECT private_key FROM dkim_keys k JOIN domains d ON d.id = k.domain_id "
                              "WHERE d.name = $1 AND k.selector = 'second'", domain)
    assert "PRIVATE KEY" in row["private_key"]


def test_owner_makes_dkim_keys_for_their_domain_only(mail_system: MailSystem, domain: str, unique: str,
                                                    tmp_path: Path):
    owner = f"owner@{domain}"
    _operator(mail_system, owner, "owner")
    client = ApiClient(mail_system)
    client.login(owner)
    [own] = client.get("/api/v1/domains").json()
    created = client.post(f"/api/v1/domains/{own['id']}/dkim", {"algorithm": "ed25519", "selector": "mine"})
    assert created.status == 201 and created.json()["is_active"] is True
    other = f"y{unique}.test"
    mail_system.add_domain(other)
    [other_row] = mail_system.fetch("SELECT id FROM domains WHERE name = $1", other)
    for path in (f"/api/v1/domains/{other_row['id']}/dkim", f"/api/v1/domains/{other_row['id']}/dkim/mine/activate"):
        assert client.post(path, {"algorithm": "ed25519"} if path.endswith("dkim") else {}).status == 404
    assert client.get(f"/api/v1/domains/{other_row['id']}/dkim").status == 404
    assert client.get("/api/v1/queue").status == 403
    assert client.call("DELETE", "/api/v1/queue/1").status == 403
    bad = client.post(f"/api/v1/domains/{own['id']}/dkim", {"algorithm": "dsa"})
    assert bad.status == 400 and "algorithm" in bad.json()["message"]


def test_plain_user_gets_403_from_operator_endpoints(mail_system: MailSystem, domain: str):
    user = f"plain@{domain}"
    mail_system.add_user(user)
    client = ApiClient(mail_system)
    client.login(user)
    [row] = mail_system.fetch("SELECT id FROM domains WHERE name = $1", domain)
    assert client.get("/api/v1/queue").status == 403
    assert client.post("/api/v1/queue/1/retry", {}).status == 403
    assert client.post(f"/api/v1/domains/{row['id']}/dkim", {"algorithm": "ed25519"}).status == 403
    assert client.get(f"/api/v1/domains/{row['id']}/dkim").status == 403


# --- both modes ----------------------------------------------------------------------------------

def test_direct_database_mode_prints_what_the_api_mode_prints(
    admin_ctl: Run, mail_system: MailSystem, domain: str, unique: str, pg_dsn: str, tmp_path: Path
):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WHYMAIL")}
    env.update(WHYMAIL_DB_DSN=pg_dsn, WHYMAIL_STATE_DIR=str(tmp_path / "state"),
               WHYMAIL_CTL_CONFIG=str(tmp_path / "no-login.json"))

    def direct(*args: str) -> str:
        return ok(subprocess.run([*CTL, *args], input="", capture_output=True, text=True, env=env, timeout=120))

    ok(admin_ctl("config", "set", f"test.both_{unique}", '{"a": [1, 2]}'))
    assert direct("config", "set", f"test.both_{unique}_direct", "true") == f"set test.both_{unique}_direct = true\n"
    ok(admin_ctl("domain", "dkim", domain, "--algorithm", "ed25519", "--selector", "both"))
    ok(admin_ctl("alias", "add", f"team@{domain}", f"root@{domain}"))
    for command in (["config", "show"], ["domain", "dkim", domain, "--list"], ["user", "list", "--domain", domain],
                    ["alias", "list", "--domain", domain]):
        assert direct(*command) == ok(admin_ctl(*command)), command
    # JSON: the same values; times are ISO 8601 in both (+00:00 from the database, Z from the API).
    from_db = json.loads(direct("--json", "config", "show"))
    from_api = json.loads(ok(admin_ctl("--json", "config", "show")))
    assert from_db["settings"] == from_api["settings"]
    assert dt.datetime.fromisoformat(from_db["updated_at"]) == dt.datetime.fromisoformat(from_api["updated_at"])
    assert direct("config", "reload").startswith("nothing to reload")
