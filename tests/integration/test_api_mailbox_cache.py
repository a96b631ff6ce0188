"""`GET /mailboxes` is cached per user in the HTTP gateway: every change shows as soon as its live event
has arrived (a delivery, a flag set over IMAP), and a change made through the API shows at once."""

from __future__ import annotations

import asyncio
import imaplib
import json
import smtplib

from websockets.asyncio.client import connect

from tests.integration.api_client import ApiClient
from tests.integration.conftest import TEST_PASSWORD, MailSystem

EVENT_WAIT = 5.0


def _deliver(system: MailSystem, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as smtp:
        body = f"From: Carol <carol@example.org>\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n"
        assert smtp.sendmail("carol@example.org", [rcpt], body) == {}


def _inbox(client: ApiClient) -> dict:
    response = client.get("/api/v1/mailboxes")
    assert response.status == 200, response.body
    return next(m for m in response.json() if m["name"] == "INBOX")


async def _next(ws, wanted: str) -> dict:
    async with asyncio.timeout(EVENT_WAIT):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == wanted:
                return message


def test_delivery_and_imap_flag_change_show_in_the_cached_list_right_after_their_event(
    mail_system: MailSystem, domain: str
):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    client.login(alice)

    async def scenario():
        url = f"ws://127.0.0.1:{mail_system.http_port}/ws?token={client.token}"
        async with connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "connected"
            for _ in range(3):  # cached now (the second and third answers come from the cache)
                assert (await asyncio.to_thread(_inbox, client))["total"] == 0

            await asyncio.to_thread(_deliver, mail_system, alice, "count me")
            await _next(ws, "new_message")
            inbox = await asyncio.to_thread(_inbox, client)
            assert (inbox["total"], inbox["unread"]) == (1, 1)

            uid = (await asyncio.to_thread(mail_system.messages_of, alice))[0]["uid"]

            def store_seen():
                imap = imaplib.IMAP4("127.0.0.1", mail_system.cluster.imap_port, timeout=30)
                try:
                    imap.login(alice, TEST_PASSWORD)
                    imap.select("INBOX")
                    assert imap.uid("STORE", str(uid), "+FLAGS", r"(\Seen)")[0] == "OK"
                finally:
                    imap.logout()

            await asyncio.to_thread(store_seen)
            await _next(ws, "message_updated")
            inbox = await asyncio.to_thread(_inbox, client)
            assert (inbox["total"], inbox["unread"]) == (1, 0)

    asyncio.run(scenario())


def test_a_change_through_the_api_shows_in_the_cached_list_at_once(mail_system: MailSystem, domain: str):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    _deliver(mail_system, bob, "read me")
    client = ApiClient(mail_system)
    client.login(bob)
    inbox = _inbox(client)
    assert (inbox["total"], inbox["unread"]) == (1, 1)
    assert _inbox(client)["unread"] == 1  # from the cache
    message = client.get(f"/api/v1/mailboxes/{inbox['id']}/messages").json()["messages"][0]
    assert client.call("PATCH", f"/api/v1/messages/{message['id']}", {"seen": True}).status == 200
    assert _inbox(client)["unread"] == 0  # no event awaited: the write dropped the cached list
    created = client.post("/api/v1/mailboxes", {"name": "Later"})
    assert created.status == 201
    names = [m["name"] for m in client.get("/api/v1/mailboxes").json()]
    assert "Later" in names
