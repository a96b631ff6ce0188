"""Every kind of notification besides new mail reaches GET /api/v1/notifications of the right users only:
queue outcomes for the submitter, quota warnings for the mailbox's owner, directory changes for the
admins and the domain's owners."""

from __future__ import annotations

import smtplib
import uuid

from tests.integration.api_client import ApiClient
from tests.integration.conftest import MailSystem
from tests.integration.test_outbound_queue import _submit, remote_domain
from tests.integration.test_submission import _message, wait_for

API = "/api/v1"


def _client(system: MailSystem, email: str) -> ApiClient:
    client = ApiClient(system)
    client.login(email)
    return client


def _notes(client: ApiClient, kind: str) -> list[dict]:
    response = client.get(f"{API}/notifications?limit=200")
    assert response.status == 200, response.body
    return [n for n in response.json()["items"] if n["type"] == kind]


def _wait_notes(client: ApiClient, kind: str, count: int = 1, what: str = "") -> list[dict]:
    return wait_for(lambda: (lambda found: found if len(found) >= count else None)(_notes(client, kind)),
                    timeout=30, what=what or f"{count} {kind} notification(s)")


# --- outbound queue ------------------------------------------------------------------------------------

def test_email_sent_reaches_the_submitter_only(mail_system: MailSystem, domain: str, dns_zone, mx_port):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    alice_api, bob_api = _client(mail_system, alice), _client(mail_system, bob)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        to = f"carol@{remote}"
        _submit(mail_system, alice, [to], _message(alice, to, "goes out"))
        [note] = _wait_notes(alice_api, "email_sent")
        assert [m.rcpt_tos for m in sink.messages] == [[to]]
    assert to in note["title"]
    assert note["data"]["recipients"] == [to] and note["data"]["status"] == "sent"
    row = mail_system.fetch("SELECT id FROM outbound_queue WHERE sender = $1", alice)[0]
    assert note["data"]["queue_id"] == row["id"]
    assert _notes(alice_api, "email_failed") == [] and _notes(alice_api, "email_retry") == []
    assert _notes(bob_api, "email_sent") == []


def test_email_failed_after_a_550(mail_system: MailSystem, domain: str, dns_zone, mx_port):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    alice_api, bob_api = _client(mail_system, alice), _client(mail_system, bob)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("RCPT", "550 5.1.1 no such user here")
        ghost = f"ghost@{remote}"
        _submit(mail_system, alice, [ghost], _message(alice, ghost, "nobody home"))
        [note] = _wait_notes(alice_api, "email_failed")
    assert ghost in note["title"] and "could not be delivered" in note["title"]
    assert "550" in note["body"] and "no such user here" in note["body"]
    assert note["data"]["status"] == "failed"
    assert _notes(alice_api, "email_sent") == []
    assert _notes(bob_api, "email_failed") == []
    # The DSN the failure produced is a row of no user: it brings no notification of its own.
    wait_for(lambda: mail_system.messages_of(alice), timeout=30, what="the DSN in alice's INBOX")
    assert len(_notes(alice_api, "email_failed")) == 1


def test_email_retry_on_the_first_deferral_only(mail_system: MailSystem, domain: str, dns_zone, mx_port):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    alice_api = _client(mail_system, alice)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("DATA", "451 4.3.0 try again later", times=2)
        to = f"dave@{remote}"
        _submit(mail_system, alice, [to], _message(alice, to, "slowly"))
        _wait_notes(alice_api, "email_sent", what="delivery after two 451s")
    row = mail_system.fetch("SELECT attempts FROM outbound_queue WHERE sender = $1", alice)[0]
    assert row["attempts"] == 3  # two deferrals, one notification
    [retry] = _notes(alice_api, "email_retry")
    assert "451" in retry["body"] and retry["data"]["attempts"] == 1 and retry["data"]["status"] == "deferred"


# --- quota -------------------------------------------------------------------------------------------

def _deliver(system: MailSystem, rcpt: str, filler: int) -> None:
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as smtp:
        body = (f"From: carol@example.org\r\nTo: {rcpt}\r\nSubject: filler {uuid.uuid4().hex[:6]}\r\n\r\n"
                + "x" * filler + "\r\n")
        assert smtp.sendmail("carol@example.org", [rcpt], body) == {}


def _used(system: MailSystem, email: str) -> int:
    return system.fetch("SELECT storage_used FROM users WHERE email = $1", email)[0]["storage_used"]


def test_quota_warning_once_per_threshold(mail_system: MailSystem, domain: str):
    quota = 20_000
    small, other = f"small@{domain}", f"other@{domain}"
    mail_system.add_user(small, quota_bytes=quota)
    mail_system.add_user(other)
    small_api, other_api = _client(mail_system, small), _client(mail_system, other)
    # Small messages (a few % of the quota each): several land between 80 and 90 %, and must not warn again.
    stored = 0
    while _used(mail_system, small) < quota * 0.9:
        _deliver(mail_system, small, 300)
        stored += 1
        wait_for(lambda n=stored: len(mail_system.messages_of(small)) == n, what=f"message {stored} stored")
        if stored == 1:
            assert _used(mail_system, small) < quota * 0.05, "the filler messages are too large for this test"
    notes = _wait_notes(small_api, "quota_warning", count=2, what="warnings at 80 and 90 %")
    assert sorted(n["data"]["percent"] for n in notes) == [80, 90]
    ninety = next(n for n in notes if n["data"]["percent"] == 90)
    assert ninety["data"]["quota_bytes"] == quota and ninety["data"]["storage_used"] >= quota * 0.9
    assert ninety["title"] == "Your mailbox is 90% full"
    assert _notes(other_api, "quota_warning") == []


# --- directory changes ---------------------------------------------------------------------------------

def test_domain_added_and_user_added_reach_admins_and_the_domains_owners(mail_system: MailSystem, domain: str):
    token = uuid.uuid4().hex[:8]
    admin_domain, other = f"adm{token}.test", f"oth{token}.test"
    mail_system.add_domain(admin_domain)
    mail_system.add_domain(other)
    people = {"admin": f"boss@{admin_domain}", "owner": f"own@{domain}", "owner_b": f"own@{other}",
              "user": f"pat@{domain}"}
    for role, email in people.items():
        mail_system.add_user(email)
        if role != "user":
            mail_system.fetch("UPDATE users SET role = $2 WHERE email = $1", email, role.removesuffix("_b"))
    api = {role: _client(mail_system, email) for role, email in people.items()}

    new_domain = f"new{token}.test"
    created = api["admin"].post(f"{API}/domains", {"name": new_domain})
    assert created.status == 201, created.body
    # Written in the background (never slowing the request): poll for it.
    [note] = wait_for(lambda: [n for n in _notes(api["admin"], "domain_added") if n["data"]["domain"] == new_domain],
                      what="the domain_added notification")
    assert note["data"]["domain_id"] == created.json()["id"] and note["data"]["by"] == people["admin"]
    for role in ("owner", "owner_b", "user"):
        assert _notes(api[role], "domain_added") == [], role

    domain_id = mail_system.fetch("SELECT id FROM domains WHERE name = $1", domain)[0]["id"]
    made = api["owner"].post(f"{API}/domains/{domain_id}/users", {"email": "fresh", "password": "a long password 1"})
    assert made.status == 201, made.body
    fresh = f"fresh@{domain}"
    for role in ("admin", "owner"):
        [added] = wait_for(lambda r=role: [n for n in _notes(api[r], "user_added") if n["data"]["email"] == fresh],
                           what=f"the user_added notification of the {role}")
        assert added["data"]["user_id"] == made.json()["id"] and added["data"]["by"] == people["owner"]
    for role in ("owner_b", "user"):
        assert _notes(api[role], "user_added") == [], role
    assert mail_system.fetch("SELECT count(*) AS n FROM notifications WHERE user_id = $1",
                             made.json()["id"])[0]["n"] == 0
