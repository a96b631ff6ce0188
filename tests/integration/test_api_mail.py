"""The webmail API over real mail: delivered by SMTP, read, flagged, moved, deleted and sent over HTTP."""

from __future__ import annotations

import base64
import smtplib
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import quote

from tests.integration.api_client import ApiClient
from tests.integration.conftest import MailSystem

SENDER = "news@elsewhere.test"
EVIL_HTML = ('<p onclick="steal()">Hello <b>there</b></p><script>alert("x")</script>'
             '<img src="https://tracker.example/pixel.gif">')
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8


def _deliver(system: MailSystem, to: str, subject: str, *, html: str | None = None,
             attachment: tuple[str, bytes] | None = None) -> None:
    msg = EmailMessage()
    msg["From"] = f"News <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"text of {subject}\n")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=60) as smtp:
        assert smtp.sendmail(SENDER, [to], msg.as_bytes()) == {}


def _client(system: MailSystem, email: str) -> ApiClient:
    client = ApiClient(system)
    client.login(email)
    return client


def _mailboxes(client: ApiClient) -> dict[str, dict]:
    response = client.get("/api/v1/mailboxes")
    assert response.status == 200, response.body
    return {m["name"]: m for m in response.json()}


def _messages(client: ApiClient, mailbox_id: int, query: str = "") -> dict:
    response = client.get(f"/api/v1/mailboxes/{mailbox_id}/messages{query}")
    assert response.status == 200, response.body
    return response.json()


def _wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_mailboxes_are_listed_created_renamed_and_deleted(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = _client(mail_system, alice)
    _deliver(mail_system, alice, "count me")
    boxes = _mailboxes(client)
    assert list(boxes)[0] == "INBOX" and boxes["INBOX"]["total"] == 1 and boxes["INBOX"]["unread"] == 1
    assert boxes["Sent"]["special_use"] == "\\Sent" and boxes["Trash"]["special_use"] == "\\Trash"

    created = client.post("/api/v1/mailboxes", {"name": "Projects/2025"})
    assert created.status == 201 and created.json()["name"] == "Projects/2025" and created.json()["total"] == 0
    assert {"Projects", "Projects/2025"} <= set(_mailboxes(client))  # the parent came along
    assert client.post("/api/v1/mailboxes", {"name": "Projects/2025"}).status == 409
    box_id = created.json()["id"]
    renamed = client.call("PATCH", f"/api/v1/mailboxes/{box_id}", {"name": "Done 2025"})
    assert renamed.status == 200 and renamed.json()["name"] == "Done 2025"
    assert "Projects/2025" not in _mailboxes(client)
    assert client.call("DELETE", f"/api/v1/mailboxes/{renamed.json()['id']}").status == 204
    assert "Done 2025" not in _mailboxes(client)
    trash = boxes["Trash"]["id"]
    assert client.call("DELETE", f"/api/v1/mailboxes/{trash}").status == 409  # system mailbox
    assert client.call("DELETE", f"/api/v1/mailboxes/{boxes['INBOX']['id']}").status == 409
    assert "Trash" in _mailboxes(client)


def test_someone_elses_mailbox_or_message_is_404(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    _deliver(mail_system, alice, "private", attachment=("secret.pdf", PDF))
    owner = _client(mail_system, alice)
    inbox = _mailboxes(owner)["INBOX"]["id"]
    [message] = _messages(owner, inbox)["messages"]
    intruder = _client(mail_system, bob)
    mid = message["id"]
    for method, path, body in (
        ("GET", f"/api/v1/mailboxes/{inbox}/messages", None),
        ("PATCH", f"/api/v1/mailboxes/{inbox}", {"name": "Mine"}),
        ("DELETE", f"/api/v1/mailboxes/{inbox}", None),
        ("GET", f"/api/v1/messages/{mid}", None),
        ("GET", f"/api/v1/messages/{mid}/attachments/2", None),
        ("PATCH", f"/api/v1/messages/{mid}", {"seen": True}),
        ("PATCH", f"/api/v1/messages/{mid}", {"mailbox_id": _mailboxes(intruder)["Archive"]["id"]}),
        ("DELETE", f"/api/v1/messages/{mid}?permanent=true", None),
    ):
        response = intruder.call(method, path, body)
        assert response.status == 404, (method, path, response.body)
        assert response.json()["error"] == "not_found"
    # The owner's own move to the intruder's mailbox id is a 404 too, and nothing changed.
    foreign_box = _mailboxes(intruder)["Archive"]["id"]
    assert owner.call("PATCH", f"/api/v1/messages/{mid}", {"mailbox_id": foreign_box}).status == 404
    rows = mail_system.messages_of(alice)
    assert len(rows) == 1 and "\\Seen" not in rows[0]["flags"]


def test_read_flag_move_and_delete_a_delivered_message(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    _deliver(mail_system, alice, "Quarterly report", html=EVIL_HTML, attachment=("report Ü.pdf", PDF))
    client = _client(mail_system, alice)
    boxes = _mailboxes(client)
    [listed] = _messages(client, boxes["INBOX"]["id"])["messages"]
    assert listed["subject"] == "Quarterly report" and SENDER in listed["from_addr"]
    assert listed["has_attachments"] and not listed["seen"]

    detail = client.get(f"/api/v1/messages/{listed['id']}")
    assert detail.status == 200, detail.body
    body = detail.json()
    assert body["text"].strip() == "text of Quarterly report" and body["mailbox_name"] == "INBOX"
    assert "Hello <b>there</b>" in body["html"]
    assert "script" not in body["html"] and "onclick" not in body["html"] and "tracker.example" not in body["html"]
    assert body["remote_content_blocked"] == 1
    [attachment] = body["attachments"]
    assert attachment["filename"] == "report Ü.pdf" and attachment["content_type"] == "application/pdf"
    assert attachment["size"] == len(PDF)
    assert [m["id"] for m in body["thread"]] == [listed["id"]]

    download = client.get(attachment["url"])
    assert download.status == 200 and download.body == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"report _.pdf\"; filename*=UTF-8''" + quote("report Ü.pdf", safe="")
    )
    assert client.get(f"/api/v1/messages/{listed['id']}/attachments/9").status == 404
    assert client.get(f"/api/v1/messages/{listed['id']}/attachments/x%0d%0aSet-Cookie:%20a=b").status == 404

    patched = client.call("PATCH", f"/api/v1/messages/{listed['id']}",
                          {"seen": True, "flagged": True, "keywords": ["$Important", "work"]})
    assert patched.status == 200, patched.body
    assert patched.json()["seen"] and patched.json()["flagged"] and patched.json()["keywords"] == ["$Important", "work"]
    [row] = mail_system.messages_of(alice)
    assert set(row["flags"]) == {"\\Seen", "\\Flagged", "$Important", "work"}
    assert _mailboxes(client)["INBOX"]["unread"] == 0
    unflagged = client.call("PATCH", f"/api/v1/messages/{listed['id']}", {"flagged": False, "keywords": ["work"]})
    assert unflagged.status == 200 and not unflagged.json()["flagged"] and unflagged.json()["keywords"] == ["work"]

    moved = client.call("PATCH", f"/api/v1/messages/{listed['id']}", {"mailbox_id": boxes["Archive"]["id"]})
    assert moved.status == 200, moved.body
    moved_id = moved.json()["id"]
    assert moved.json()["mailbox_id"] == boxes["Archive"]["id"] and moved.json()["keywords"] == ["work"]
    assert mail_system.messages_of(alice) == [] and len(mail_system.messages_of(alice, "Archive")) == 1
    assert client.get(f"/api/v1/messages/{listed['id']}").status == 404  # the old id is gone

    assert client.call("DELETE", f"/api/v1/messages/{moved_id}").status == 204
    [in_trash] = _messages(client, boxes["Trash"]["id"])["messages"]
    assert in_trash["subject"] == "Quarterly report"
    assert client.call("DELETE", f"/api/v1/messages/{in_trash['id']}").status == 204  # from Trash: for good
    assert mail_system.messages_of(alice, "Trash") == [] and mail_system.messages_of(alice, "Archive") == []
    assert client.get(f"/api/v1/messages/{in_trash['id']}").status == 404


def test_pages_cover_every_message_exactly_once_and_filters_apply(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    for n in range(7):
        _deliver(mail_system, alice, f"letter {n}", attachment=("a.pdf", PDF) if n == 3 else None)
    client = _client(mail_system, alice)
    inbox = _mailboxes(client)["INBOX"]["id"]
    for sort in ("date_desc", "date_asc"):
        seen_ids: list[int] = []
        dates: list[str] = []
        cursor = None
        pages = 0
        while True:
            query = f"?limit=3&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            page = _messages(client, inbox, query)
            seen_ids += [m["id"] for m in page["messages"]]
            dates += [m["received_at"] for m in page["messages"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and len(seen_ids) == 7 and len(set(seen_ids)) == 7
        assert dates == sorted(dates, reverse=sort == "date_desc")
    everything = _messages(client, inbox, "?limit=200")["messages"]
    assert [m["subject"] for m in _messages(client, inbox, "?subject=LETTER%204")["messages"]] == ["letter 4"]
    assert [m["subject"] for m in _messages(client, inbox, "?has_attachment=true")["messages"]] == ["letter 3"]
    assert len(_messages(client, inbox, "?sender=elsewhere.test")["messages"]) == 7
    assert _messages(client, inbox, "?sender=nobody")["messages"] == []
    target = everything[0]["id"]
    assert client.call("PATCH", f"/api/v1/messages/{target}", {"seen": True, "flagged": True}).status == 200
    unread = _messages(client, inbox, "?unread=true")["messages"]
    assert len(unread) == 6 and target not in [m["id"] for m in unread]
    assert [m["id"] for m in _messages(client, inbox, "?flagged=true")["messages"]] == [target]
    assert _messages(client, inbox, "?since=2999-01-01T00:00:00Z")["messages"] == []
    assert len(_messages(client, inbox, "?until=2999-01-01T00:00:00Z")["messages"]) == 7


def test_send_to_local_users_arrives_with_headers_and_leaves_a_sent_copy(mail_system: MailSystem, domain: str):
    alice, bob, carol = f"alice@{domain}", f"bob@{domain}", f"carol@{domain}"
    for user in (alice, bob, carol):
        mail_system.add_user(user)
    client = _client(mail_system, alice)
    sent = client.post("/api/v1/send", {
        "to": [bob], "bcc": [carol], "subject": "Lunch? ☕", "text": "At noon?\n", "html": "<p>At <b>noon</b>?</p>",
        "from_name": "Alice A.",
        "attachments": [{"filename": "menu.pdf", "content_type": "application/pdf",
                         "content_base64": base64.b64encode(PDF).decode()}],
    })
    assert sent.status == 202, sent.body
    message_id = sent.json()["message_id"]
    assert message_id.startswith("<") and message_id.endswith(f"@{domain}>") and sent.json()["delivery_id"]

    [at_bob] = _wait_for(lambda: mail_system.messages_of(bob), "delivery to bob")
    [at_carol] = _wait_for(lambda: mail_system.messages_of(carol), "delivery to carol")
    raw = (mail_system.maildir_root / at_bob["maildir_path"]).read_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Message-ID"] == message_id and parsed["Subject"] == "Lunch? ☕"
    assert parsed["From"].addresses[0].addr_spec == alice and parsed["From"].addresses[0].display_name == "Alice A."
    assert parsed["To"].addresses[0].addr_spec == bob and parsed["Date"] is not None
    assert parsed["Bcc"] is None and carol.encode() not in raw.split(b"\r\n\r\n", 1)[0]
    assert at_carol["message_id"] == message_id
    [copy] = mail_system.messages_of(alice, "Sent")
    assert copy["message_id"] == message_id and "\\Seen" in copy["flags"]

    bob_client = _client(mail_system, bob)
    detail = bob_client.get(f"/api/v1/messages/{at_bob['id']}").json()
    assert detail["text"].strip() == "At noon?" and "<b>noon</b>" in detail["html"]
    [menu] = detail["attachments"]
    assert menu["filename"] == "menu.pdf" and bob_client.get(menu["url"]).body == PDF

    reply = bob_client.post("/api/v1/send", {"to": [alice], "subject": "Re: Lunch? ☕", "text": "Yes",
                                             "in_reply_to": message_id})
    assert reply.status == 202, reply.body
    [answer] = _wait_for(lambda: mail_system.messages_of(alice), "the reply")
    assert answer["in_reply_to"] == message_id and message_id in answer["references_hdr"]
    thread = client.get(f"/api/v1/messages/{answer['id']}").json()["thread"]
    assert {m["message_id"] for m in thread} == {message_id, reply.json()["message_id"]}
    assert {m["mailbox_id"] for m in thread} == {
        _mailboxes(client)["Sent"]["id"], _mailboxes(client)["INBOX"]["id"]}
    # Bob's view of the same thread holds only Bob's copies: his INBOX message and his Sent reply.
    bob_thread = bob_client.get(f"/api/v1/messages/{at_bob['id']}").json()["thread"]
    bob_boxes = _mailboxes(bob_client)
    assert sorted(m["mailbox_id"] for m in bob_thread) == sorted([bob_boxes["INBOX"]["id"], bob_boxes["Sent"]["id"]])


def test_bad_input_is_400(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = _client(mail_system, alice)
    _deliver(mail_system, alice, "x")
    inbox = _mailboxes(client)["INBOX"]["id"]
    [message] = _messages(client, inbox)["messages"]
    for body in (
        {"to": ["not-an-address"], "subject": "s", "text": "t"},
        {"to": [f"bob@{domain}"], "subject": "s\r\nBcc: evil@elsewhere.test", "text": "t"},
        {"to": [], "subject": "s", "text": "t"},
        {"to": [f"bob@{domain}"], "text": "t", "in_reply_to": "no angle brackets"},
        {"to": [f"bob@{domain}"], "text": "t", "attachments": [{"filename": "a", "content_base64": "!!not base64"}]},
        {"to": [f"bob@{domain}"], "text": "t", "priority": "high"},
    ):
        response = client.post("/api/v1/send", body)
        assert response.status == 400, (body, response.body)
    for query in ("?limit=500", "?limit=0", "?sort=random", "?cursor=garbage", "?since=yesterday"):
        response = client.get(f"/api/v1/mailboxes/{inbox}/messages{query}")
        assert response.status == 400, (query, response.body)
    desc_cursor = _messages(client, inbox, "?limit=1")
    assert desc_cursor["next_cursor"] is None  # one message: no next page
    for patch in ({"keywords": ["\\Deleted"]}, {"keywords": ["two words"]}, {"seen": "maybe"}, {"mailbox_id": 0}):
        response = client.call("PATCH", f"/api/v1/messages/{message['id']}", patch)
        assert response.status == 400, (patch, response.body)
    assert client.post("/api/v1/mailboxes", {"name": ""}).status == 400
    assert client.post("/api/v1/mailboxes", {"name": "a/../b\x01"}).status == 400
    assert mail_system.fetch("SELECT count(*) AS n FROM outbound_queue o JOIN users u ON u.email = $1 "
                             "WHERE o.user_id = u.id", alice)[0]["n"] == 0
