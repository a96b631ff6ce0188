"""Stored notifications other than new mail also reach the user's socket as live `notification` events
(queue outcomes, directory changes, system alerts), and every sent message leaves an audit row."""

from __future__ import annotations

import asyncio
import json
import uuid

from websockets.asyncio.client import connect

from tests.integration.api_client import ApiClient
from tests.integration.conftest import MailSystem
from tests.integration.test_api_events import _deliver, _login, _next, _url
from tests.integration.test_outbound_queue import _next_ip, _queue_rows, _submit, remote_domain
from tests.integration.test_submission import _message, wait_for

API = "/api/v1"
QUEUE_WAIT = 30.0  # a remote delivery attempt, then the batched store and push


async def _connected(ws) -> dict:
    hello = json.loads(await ws.recv())
    assert hello["type"] == "connected"
    return hello


def _admin(system: MailSystem, email: str) -> ApiClient:
    system.add_user(email)
    system.fetch("UPDATE users SET role = 'admin' WHERE email = $1", email)
    return _login(system, email)


# --- outbound queue ------------------------------------------------------------------------------------

def test_email_sent_and_email_failed_arrive_on_the_submitters_socket_only(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    alice_api, bob_api = _login(mail_system, alice), _login(mail_system, bob)

    async def scenario():
        async with (connect(_url(mail_system, alice_api.token)) as a, connect(_url(mail_system, bob_api.token)) as b,
                    asyncio.timeout(120)):
            await _connected(a)
            await _connected(b)
            with remote_domain(dns_zone, mx_port) as (good, _), remote_domain(dns_zone, mx_port) as (bad, sink):
                sink.script("RCPT", "550 5.1.1 no such user here")
                to, ghost = f"carol@{good}", f"ghost@{bad}"
                await asyncio.to_thread(_submit, mail_system, alice, [to], _message(alice, to, "goes out"))
                sent = await _next(a, "notification", timeout=QUEUE_WAIT, kind="email_sent")
                await asyncio.to_thread(_submit, mail_system, alice, [ghost], _message(alice, ghost, "bounces"))
                failed = await _next(a, "notification", timeout=QUEUE_WAIT, kind="email_failed")
            assert sent["data"]["data"]["recipients"] == [to] and to in sent["data"]["title"]
            assert failed["data"]["data"]["recipients"] == [ghost] and "550" in failed["data"]["body"]
            # The same rows GET /notifications lists.
            stored = {n["id"]: n for n in alice_api.get(f"{API}/notifications?limit=200").json()["items"]}
            assert stored[sent["data"]["notification_id"]]["type"] == "email_sent"
            assert stored[failed["data"]["notification_id"]]["type"] == "email_failed"
            # Bob's first notification must be his own new mail: Alice's, had they leaked, come before it.
            await asyncio.to_thread(_deliver, mail_system, bob, "for bob")
            first = await _next(b, "notification", timeout=10)
            assert first["data"]["kind"] == "new_email" and first["data"]["body"] == "for bob"

    asyncio.run(scenario())


# --- directory changes ---------------------------------------------------------------------------------

def test_user_added_reaches_the_domains_owner_live(mail_system: MailSystem, domain: str):
    token = uuid.uuid4().hex[:8]
    admin = _admin(mail_system, f"boss{token}@{domain}")
    owner_email, user_email = f"own@{domain}", f"pat@{domain}"
    mail_system.add_user(owner_email)
    mail_system.add_user(user_email)
    mail_system.fetch("UPDATE users SET role = 'owner' WHERE email = $1", owner_email)
    owner, user = _login(mail_system, owner_email), _login(mail_system, user_email)
    domain_id = mail_system.fetch("SELECT id FROM domains WHERE name = $1", domain)[0]["id"]

    async def scenario():
        async with (connect(_url(mail_system, owner.token)) as o, connect(_url(mail_system, user.token)) as u,
                    connect(_url(mail_system, admin.token)) as a):
            for ws in (o, u, a):
                await _connected(ws)
            made = await asyncio.to_thread(admin.post, f"{API}/domains/{domain_id}/users",
                                           {"email": "fresh", "password": "a long password 1"})
            assert made.status == 201, made.body
            event = await _next(o, "notification", timeout=10, kind="user_added")
            assert event["data"]["data"]["email"] == f"fresh@{domain}"
            assert event["data"]["data"]["user_id"] == made.json()["id"]
            await _next(a, "notification", timeout=10, kind="user_added")  # the admins are told too
            new_domain = f"new{token}.test"
            created = await asyncio.to_thread(admin.post, f"{API}/domains", {"name": new_domain})
            assert created.status == 201, created.body
            added = await _next(a, "notification", timeout=10, kind="domain_added")
            assert added["data"]["data"]["domain"] == new_domain
            # A plain user hears of neither: the first notification on the socket is their own new mail.
            await asyncio.to_thread(_deliver, mail_system, user_email, "for pat")
            first = await _next(u, "notification", timeout=10)
            assert first["data"]["kind"] == "new_email"

    asyncio.run(scenario())


# --- system alerts --------------------------------------------------------------------------------------

def test_system_alert_broadcast_reaches_admins_only(mail_system: MailSystem, domain: str):
    token = uuid.uuid4().hex[:8]
    boss, other_admin = _admin(mail_system, f"boss{token}@{domain}"), _admin(mail_system, f"ops{token}@{domain}")
    owner_email, user_email = f"own@{domain}", f"pat@{domain}"
    mail_system.add_user(owner_email)
    mail_system.add_user(user_email)
    mail_system.fetch("UPDATE users SET role = 'owner' WHERE email = $1", owner_email)
    owner, user = _login(mail_system, owner_email), _login(mail_system, user_email)
    title = f"maintenance {token}"
    alert = {"title": title, "body": "The queue is paused at 22:00."}
    assert user.post(f"{API}/system/alerts", alert).status == 403
    assert owner.post(f"{API}/system/alerts", alert).status == 403
    assert boss.post(f"{API}/system/alerts", {"title": ""}).status == 400

    async def scenario():
        async with connect(_url(mail_system, other_admin.token)) as ws:
            await _connected(ws)
            sent = await asyncio.to_thread(boss.post, f"{API}/system/alerts", alert)
            assert sent.status == 201, sent.body
            admins = (await asyncio.to_thread(
                mail_system.fetch, "SELECT count(*) AS n FROM users WHERE role = 'admin' AND is_active"))[0]["n"]
            assert sent.json()["recipients"] == admins
            event = await _next(ws, "notification", timeout=10, kind="system_alert", title=title)
            assert event["data"]["body"] == alert["body"]
            assert event["data"]["data"] == {"source": "broadcast", "by": f"boss{token}@{domain}"}

    asyncio.run(scenario())
    for client in (boss, other_admin):
        items = client.get(f"{API}/notifications?limit=200").json()["items"]
        assert [n["title"] for n in items if n["type"] == "system_alert" and n["title"] == title] == [title]
    for client in (owner, user):
        items = client.get(f"{API}/notifications?limit=200").json()["items"]
        assert [n for n in items if n["type"] == "system_alert"] == []
    rows = mail_system.fetch("SELECT actor_email FROM audit_logs WHERE action = 'system_alert_sent' "
                             "AND details->>'title' = $1", title)
    assert [r["actor_email"] for r in rows] == [f"boss{token}@{domain}"]


def test_a_dead_queue_entry_is_a_system_alert_for_the_admins(mail_system: MailSystem, domain: str, dns_zone):
    token = uuid.uuid4().hex[:8]
    admin = _admin(mail_system, f"boss{token}@{domain}")
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    alice_api = _login(mail_system, alice)
    remote = f"r{uuid.uuid4().hex[:10]}.test"
    dns_zone.add(f"{remote}. 60 IN MX 10 mx.{remote}.\nmx.{remote}. 60 IN A {_next_ip()}\n")  # nobody listens

    async def scenario():
        async with connect(_url(mail_system, admin.token)) as ws, asyncio.timeout(90):
            await _connected(ws)
            to = f"late@{remote}"
            await asyncio.to_thread(_submit, mail_system, alice, [to], _message(alice, to, "too late"))
            row = await asyncio.to_thread(
                wait_for, lambda: next((r for r in _queue_rows(mail_system, alice) if r["attempts"] >= 1), None),
                20.0, "the first attempt")
            await asyncio.to_thread(mail_system.fetch, "UPDATE outbound_queue SET expires_at = now(), "
                                    "next_attempt_at = now() WHERE id = $1", row["id"])
            while True:
                event = await _next(ws, "notification", timeout=QUEUE_WAIT, kind="system_alert")
                if row["id"] in event["data"]["data"].get("queue_ids", []):
                    break
            data = event["data"]["data"]
            assert data["source"] == "queue" and data["count"] >= 1 and data["dead_total"] >= 1
            assert remote in data["recipient_domains"] and remote in event["data"]["body"]
            assert "given up" in event["data"]["title"]

    asyncio.run(scenario())
    assert mail_system.fetch("SELECT status FROM outbound_queue WHERE id = (SELECT max(id) FROM outbound_queue "
                             "WHERE sender = $1)", alice)[0]["status"] == "dead"
    # The submitter is told through email_failed; the operators' alert is not theirs.
    assert not [n for n in alice_api.get(f"{API}/notifications?limit=200").json()["items"]
                if n["type"] == "system_alert"]


# --- audit rows for sends ------------------------------------------------------------------------------

def _audit_rows(system: MailSystem, user_id: int) -> list:
    return system.fetch("SELECT * FROM audit_logs WHERE action = 'message_sent' AND actor_user_id = $1 "
                        "ORDER BY id", user_id)


def test_api_send_and_smtp_submission_leave_an_audit_row_each(mail_system: MailSystem, domain: str):
    alice, bob, carol = f"alice@{domain}", f"bob@{domain}", f"carol@{domain}"
    alice_id = mail_system.add_user(alice)
    mail_system.add_user(bob)
    mail_system.add_user(carol)
    api = _login(mail_system, alice)
    sent = api.post(f"{API}/send", {"to": [bob, carol], "subject": "audited", "text": "hello"})
    assert sent.status == 202, sent.body
    [row] = _audit_rows(mail_system, alice_id)  # written before the 202
    details = json.loads(row["details"]) if isinstance(row["details"], str) else row["details"]
    assert row["target_type"] == "delivery" and row["target_id"] == sent.json()["delivery_id"]
    assert row["actor_email"] == alice and details["via"] == "api" and details["recipients"] == 2
    assert details["size"] > 0

    _submit(mail_system, alice, [bob], _message(alice, bob, "over smtp"))
    rows = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(_audit_rows(mail_system, alice_id)),
                    what="the audit row of the SMTP submission")
    smtp_row = rows[1]
    details = json.loads(smtp_row["details"]) if isinstance(smtp_row["details"], str) else smtp_row["details"]
    assert details["via"] == "smtp" and details["recipients"] == 1 and details["size"] > 0
    queued = mail_system.fetch("SELECT delivery_id::text AS id, size FROM outbound_queue WHERE sender = $1 "
                               "AND recipients = $2::text[]", alice, [bob])
    assert [q["id"] for q in queued] == [smtp_row["target_id"]]
    assert details["size"] == queued[0]["size"]
