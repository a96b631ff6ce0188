"""Live events on `GET /ws` and the notifications API, against the whole running system."""

from __future__ import annotations

import asyncio
import imaplib
import json
import smtplib
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.api_client import ApiClient
from tests.integration.conftest import TEST_PASSWORD, MailSystem

LIVE_WAIT = 1.0  # seconds a change may take to reach the socket


def _deliver(system: MailSystem, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as smtp:
        body = f"From: Carol <carol@example.org>\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n"
        assert smtp.sendmail("carol@example.org", [rcpt], body) == {}


def _url(system: MailSystem, token: str, since: int | None = None) -> str:
    url = f"ws://127.0.0.1:{system.http_port}/ws?token={token}"
    return url if since is None else f"{url}&since={since}"


async def _next(ws, wanted: str, timeout: float = LIVE_WAIT, **data) -> dict:
    """The next message of type `wanted` whose data has the given values (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == wanted and all(message.get("data", {}).get(k) == v for k, v in data.items()):
                return message


def _login(system: MailSystem, email: str) -> ApiClient:
    client = ApiClient(system)
    client.login(email)
    return client


def test_delivered_mail_reaches_the_owners_socket_only(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    alice_id = mail_system.add_user(alice)
    mail_system.add_user(bob)
    alice_token, bob_token = _login(mail_system, alice).token, _login(mail_system, bob).token

    async def scenario():
        async with connect(_url(mail_system, alice_token)) as a, connect(_url(mail_system, bob_token)) as b:
            hello = json.loads(await a.recv())
            assert hello["type"] == "connected" and hello["user_id"] == alice_id
            assert json.loads(await b.recv())["type"] == "connected"
            await asyncio.to_thread(_deliver, mail_system, alice, "for alice only")
            event = await _next(a, "new_message")  # within LIVE_WAIT of the 250
            data = event["data"]
            assert data["subject"] == "for alice only" and data["mailbox"] == "INBOX"
            stored = await asyncio.to_thread(mail_system.messages_of, alice)
            assert "carol@example.org" in data["from"] and data["uid"] == stored[0]["uid"]
            assert event["id"] > hello["last_id"] and event["ts"] > 0
            count = await _next(a, "folder_count", mailbox_id=data["mailbox_id"])
            assert count["data"]["total"] == 1 and count["data"]["unread"] == 1
            # Bob's first new_message must be his own: Alice's, had it leaked, would come before it.
            await asyncio.to_thread(_deliver, mail_system, bob, "for bob")
            first = await _next(b, "new_message")
            assert first["data"]["subject"] == "for bob"

    asyncio.run(scenario())


def test_flag_set_over_imap_is_a_message_updated_event(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    token = _login(mail_system, alice).token
    _deliver(mail_system, alice, "flag me")
    uid = mail_system.messages_of(alice)[0]["uid"]

    async def scenario():
        async with connect(_url(mail_system, token)) as ws:
            assert json.loads(await ws.recv())["type"] == "connected"

            def store_flags():
                imap = imaplib.IMAP4("127.0.0.1", mail_system.cluster.imap_port, timeout=30)
                try:
                    imap.login(alice, TEST_PASSWORD)
                    imap.select("INBOX")
                    status, _ = imap.uid("STORE", str(uid), "+FLAGS", r"(\Seen \Flagged)")
                    assert status == "OK"
                finally:
                    imap.logout()

            await asyncio.to_thread(store_flags)
            event = await _next(ws, "message_updated", action="flags")
            assert event["data"]["messages"] == [{"uid": uid, "flags": ["\\Flagged", "\\Seen"]}]
            count = await _next(ws, "folder_count", mailbox_id=event["data"]["mailbox_id"])
            assert count["data"]["unread"] == 0 and count["data"]["total"] == 1

    asyncio.run(scenario())


def test_reconnect_with_since_replays_what_was_missed(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    token = _login(mail_system, alice).token

    async def scenario():
        async with connect(_url(mail_system, token)) as first:
            last_id = json.loads(await first.recv())["last_id"]
        async with connect(_url(mail_system, token)) as watcher:  # to know when both were published
            assert json.loads(await watcher.recv())["type"] == "connected"
            for subject in ("missed one", "missed two"):
                await asyncio.to_thread(_deliver, mail_system, alice, subject)
                await _next(watcher, "new_message", subject=subject)
        async with connect(_url(mail_system, token, since=last_id)) as again:
            assert json.loads(await again.recv())["type"] == "connected"
            replayed = [(await _next(again, "new_message"))["data"]["subject"] for _ in range(2)]
            assert replayed == ["missed one", "missed two"]
        async with connect(_url(mail_system, token, since=1)) as stale:  # older than this hub
            assert json.loads(await stale.recv())["type"] == "connected"
            assert json.loads(await stale.recv())["type"] == "resync"

    asyncio.run(scenario())


def test_socket_without_valid_token_is_closed_4401(mail_system: MailSystem):
    async def scenario():
        for url in (f"ws://127.0.0.1:{mail_system.http_port}/ws", _url(mail_system, "not-a-token")):
            async with connect(url) as ws:
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                    raise AssertionError("an unauthenticated socket got a message")
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 4401

    asyncio.run(scenario())


def _wait_for_notification(client: ApiClient, subject: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.get("/api/v1/notifications?unread=true")
        assert page.status == 200, page.body
        for item in page.json()["items"]:
            if item["body"] == subject:
                return item
    raise AssertionError(f"no notification for {subject!r}")


def test_new_email_notification_can_be_read_and_deleted_by_its_owner_only(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    owner, other = _login(mail_system, alice), _login(mail_system, bob)
    _deliver(mail_system, alice, "notify me")
    note = _wait_for_notification(owner, "notify me")
    assert note["type"] == "new_email" and "carol@example.org" in note["title"] and not note["is_read"]
    path = f"/api/v1/notifications/{note['id']}"
    assert other.post(path + "/read").status == 404
    assert other.call("DELETE", path).status == 404
    assert other.get("/api/v1/notifications").json()["total"] == 0
    assert owner.post(path + "/read").status == 204
    listed = owner.get("/api/v1/notifications").json()
    assert listed["unread"] == 0 and listed["items"][0]["is_read"] and listed["items"][0]["read_at"]
    assert owner.get("/api/v1/notifications?unread=true").json()["items"] == []
    assert owner.call("DELETE", path).status == 204
    assert owner.call("DELETE", path).status == 404
    assert owner.get("/api/v1/notifications").json()["total"] == 0


def test_batch_read_all_and_preferences(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    owner, other = _login(mail_system, alice), _login(mail_system, bob)
    for subject in ("one", "two", "three"):
        _deliver(mail_system, alice, subject)
    ids = [_wait_for_notification(owner, s)["id"] for s in ("one", "two", "three")]
    stolen = other.post("/api/v1/notifications/batch", {"ids": ids, "action": "delete"})
    assert stolen.status == 200 and stolen.json()["ids"] == []
    done = owner.post("/api/v1/notifications/batch", {"ids": ids[:2], "action": "read"})
    assert done.status == 200 and done.json()["ids"] == sorted(ids[:2])
    assert owner.get("/api/v1/notifications").json()["unread"] == 1
    assert owner.post("/api/v1/notifications/read-all").json() == {"updated": 1}
    assert owner.post("/api/v1/notifications/batch", {"ids": ids, "action": "archive"}).status == 400
    deleted = owner.post("/api/v1/notifications/batch", {"ids": ids, "action": "delete"})
    assert deleted.json()["ids"] == sorted(ids) and owner.get("/api/v1/notifications").json()["total"] == 0

    prefs = owner.get("/api/v1/notifications/preferences").json()
    assert {p["type"]: p["enabled"] for p in prefs}["new_email"] is True
    put = owner.call("PUT", "/api/v1/notifications/preferences",
                     {"preferences": [{"type": "new_email", "enabled": False}]})
    assert put.status == 200 and {p["type"]: p["enabled"] for p in put.json()}["new_email"] is False
    assert {p["type"]: p["enabled"] for p in other.get("/api/v1/notifications/preferences").json()}["new_email"]
    bad = owner.call("PUT", "/api/v1/notifications/preferences", {"preferences": [{"type": "nonsense"}]})
    assert bad.status == 400


def test_a_socket_is_closed_when_its_access_token_expires(mail_system: MailSystem, domain: str):
    from pathlib import Path

    from whymail.api import tokens

    alice = f"alice@{domain}"
    user_id = mail_system.add_user(alice)
    secret = tokens.load_secret(mail_system.runtime.config.auth.jwt_secret, Path(mail_system.runtime.state_dir))
    caller = tokens.Caller(user_id, alice, "user", 0, domain)
    short = tokens.issue_access_token(secret, caller, ttl=2)

    async def scenario():
        async with connect(_url(mail_system, short)) as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            started = time.monotonic()
            try:
                await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError("the socket outlived its token with a message")
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4401
                assert closed.rcvd.reason == "token expired"
            assert time.monotonic() - started < 5

    asyncio.run(scenario())
