"""Uploads, drafts, signatures and read receipts over the API, against the real system."""

from __future__ import annotations

import http.client
import json
import smtplib
import ssl
import time
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage

from tests.integration.api_client import ApiClient, Response
from tests.integration.conftest import TEST_PASSWORD, MailSystem

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\r\n.\r\nnot the end\r\n"


def _client(system: MailSystem, email: str) -> ApiClient:
    client = ApiClient(system)
    client.login(email)
    return client


def _upload(client: ApiClient, filename: str, data: bytes, content_type: str = "application/pdf",
            field: str = "file") -> Response:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return client.post("/api/v1/attachments", raw=body,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def _wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_upload_is_stored_under_a_random_name_downloaded_and_deleted(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    client = _client(mail_system, alice)
    uploaded = _upload(client, "../../etc/résumé 2025.pdf", PDF)
    assert uploaded.status == 201, uploaded.body
    info = uploaded.json()
    assert info["filename"] == "résumé 2025.pdf" and info["size"] == len(PDF)
    assert info["content_type"] == "application/pdf" and info["draft_id"] is None

    [row] = mail_system.fetch("SELECT storage_path FROM attachments WHERE id = $1", info["id"])
    assert row["storage_path"].startswith(".uploads/") and "sum" not in row["storage_path"]
    stored = mail_system.maildir_root / row["storage_path"]
    assert stored.read_bytes() == PDF

    download = client.get(info["url"])
    assert download.status == 200 and download.body == PDF
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-length"] == str(len(PDF))
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''r%C3%A9sum%C3%A9%202025.pdf" in disposition

    other = _client(mail_system, bob)
    assert other.get(info["url"]).status == 404
    assert other.call("DELETE", info["url"]).status == 404
    assert stored.exists()

    assert client.call("DELETE", info["url"]).status == 204
    assert client.get(info["url"]).status == 404 and not stored.exists()
    assert client.call("DELETE", info["url"]).status == 404


def test_draft_round_trip_with_attachments(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    client = _client(mail_system, alice)
    first = _upload(client, "a.pdf", PDF).json()
    second = _upload(client, "b.txt", b"plain\n", "text/plain").json()

    created = client.post("/api/v1/drafts", {
        "to": [bob], "subject": "Plan", "text": "draft one", "html": "<p>draft</p>",
        "attachment_ids": [second["id"], first["id"]], "in_reply_to": "<parent@elsewhere.test>",
    })
    assert created.status == 201, created.body
    draft = created.json()
    assert draft["to"] == [bob] and draft["cc"] == [] and draft["subject"] == "Plan" and draft["html"] == "<p>draft</p>"
    assert [a["id"] for a in draft["attachments"]] == [second["id"], first["id"]]
    assert {a["draft_id"] for a in draft["attachments"]} == {draft["id"]}
    assert draft["in_reply_to"] == "<parent@elsewhere.test>"

    path = f"/api/v1/drafts/{draft['id']}"
    assert client.get(path).json() == draft
    assert [d["id"] for d in client.get("/api/v1/drafts").json()] == [draft["id"]]

    # An upload already in a draft cannot join another one; someone else's upload is not found.
    assert client.post("/api/v1/drafts", {"attachment_ids": [first["id"]]}).status == 409
    bob_client = _client(mail_system, bob)
    bob_upload = _upload(bob_client, "bob.pdf", PDF).json()
    assert client.post("/api/v1/drafts", {"attachment_ids": [bob_upload["id"]]}).status == 404
    assert len(client.get("/api/v1/drafts").json()) == 1  # the refused ones were rolled back

    replaced = client.call("PUT", path, {"cc": [bob], "subject": "Plan B", "attachment_ids": [first["id"]]})
    assert replaced.status == 200, replaced.body
    changed = replaced.json()
    assert changed["to"] == [] and changed["cc"] == [bob] and changed["text"] == "" and changed["html"] is None
    assert [a["id"] for a in changed["attachments"]] == [first["id"]] and changed["in_reply_to"] is None
    assert client.get(f"/api/v1/attachments/{second['id']}").status == 200  # left out: an upload again
    [snapshot] = mail_system.fetch("SELECT attachments::text AS a FROM drafts WHERE id = $1", draft["id"])
    assert str(first["id"]) in snapshot["a"] and str(second["id"]) not in snapshot["a"]

    # Deleting an attached upload takes it out of the draft.
    assert client.call("DELETE", f"/api/v1/attachments/{first['id']}").status == 204
    assert client.get(path).json()["attachments"] == []

    for method in ("GET", "PUT", "DELETE"):
        assert bob_client.call(method, path, {} if method == "PUT" else None).status == 404
    assert bob_client.post(f"{path}/send").status == 404

    third = _upload(client, "c.pdf", PDF).json()
    assert client.call("PUT", path, {"attachment_ids": [third["id"]]}).status == 200
    [row] = mail_system.fetch("SELECT storage_path FROM attachments WHERE id = $1", third["id"])
    assert client.call("DELETE", path).status == 204
    assert client.get(path).status == 404 and client.get(f"/api/v1/attachments/{third['id']}").status == 404
    assert not (mail_system.maildir_root / row["storage_path"]).exists()


def test_sent_draft_arrives_with_its_attachment_intact(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    client = _client(mail_system, alice)
    upload = _upload(client, "menu.pdf", PDF).json()
    [row] = mail_system.fetch("SELECT storage_path FROM attachments WHERE id = $1", upload["id"])
    draft = client.post("/api/v1/drafts", {"to": [bob], "subject": "Menu", "text": "See attached.\n",
                                           "attachment_ids": [upload["id"]]}).json()

    sent = client.post(f"/api/v1/drafts/{draft['id']}/send")
    assert sent.status == 202, sent.body
    message_id = sent.json()["message_id"]
    assert message_id.endswith(f"@{domain}>") and sent.json()["delivery_id"]

    [at_bob] = _wait_for(lambda: mail_system.messages_of(bob), "delivery to bob")
    parsed = message_from_bytes((mail_system.maildir_root / at_bob["maildir_path"]).read_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == message_id and parsed["Subject"] == "Menu"
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "menu.pdf" and attachment.get_content() == PDF
    [copy] = mail_system.messages_of(alice, "Sent")
    assert copy["message_id"] == message_id

    assert client.get(f"/api/v1/drafts/{draft['id']}").status == 404
    assert client.get(upload["url"]).status == 404
    assert not (mail_system.maildir_root / row["storage_path"]).exists()
    assert client.post(f"/api/v1/drafts/{draft['id']}/send").status == 404  # not sent twice


def test_draft_without_recipients_is_not_sent(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = _client(mail_system, alice)
    draft = client.post("/api/v1/drafts", {"subject": "later"}).json()
    refused = client.post(f"/api/v1/drafts/{draft['id']}/send")
    assert refused.status == 400, refused.body
    assert client.get(f"/api/v1/drafts/{draft['id']}").status == 200  # still there to be finished


def test_upload_over_the_message_size_limit_is_413(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = _client(mail_system, alice)
    limit = mail_system.runtime.config.server.smtp.max_message_size
    response = _upload(client, "big.bin", b"x" * (limit + 1), "application/octet-stream")
    assert response.status == 413, response.body
    assert response.json()["error"] == "too_large" and str(limit) in response.json()["message"]
    # Far bigger: the server answers from the headers alone, before the client has sent the body.
    conn = http.client.HTTPConnection("127.0.0.1", mail_system.http_port, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/attachments")
        conn.putheader("Authorization", f"Bearer {client.token}")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(limit + 2 * 1024 * 1024))
        conn.endheaders()
        early = conn.getresponse()
        assert early.status == 413 and json.loads(early.read())["error"] == "too_large"
    finally:
        conn.close()
    assert mail_system.fetch("SELECT count(*) AS n FROM attachments a JOIN users u ON u.id = a.user_id "
                             "WHERE u.email = $1", alice)[0]["n"] == 0
    assert _upload(client, "small.bin", b"x" * 1000).status == 201


def test_signatures_round_trip_with_one_default(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    client = _client(mail_system, alice)
    work = client.post("/api/v1/signatures", {"name": "Work", "text": "-- \nAlice, ACME", "is_default": True})
    assert work.status == 201, work.body
    assert work.json()["is_default"] and work.json()["text"] == "-- \nAlice, ACME"
    home = client.post("/api/v1/signatures", {"name": "Home", "html": "<p>A.</p>"}).json()
    assert not home["is_default"] and home["html"] == "<p>A.</p>"
    assert client.post("/api/v1/signatures", {"name": "Home"}).status == 409

    made = client.post(f"/api/v1/signatures/{home['id']}/default")
    assert made.status == 200 and made.json()["is_default"]
    listed = {s["name"]: s for s in client.get("/api/v1/signatures").json()}
    assert listed["Home"]["is_default"] and not listed["Work"]["is_default"]

    renamed = client.call("PUT", f"/api/v1/signatures/{work.json()['id']}",
                          {"name": "Office", "text": "Regards", "is_default": True})
    assert renamed.status == 200 and renamed.json()["name"] == "Office" and renamed.json()["is_default"]
    assert [s["name"] for s in client.get("/api/v1/signatures").json() if s["is_default"]] == ["Office"]
    assert client.call("PUT", f"/api/v1/signatures/{home['id']}", {"name": "Office"}).status == 409

    bob_client = _client(mail_system, bob)
    assert bob_client.get("/api/v1/signatures").json() == []
    assert bob_client.call("PUT", f"/api/v1/signatures/{home['id']}", {"name": "Mine"}).status == 404
    assert bob_client.post(f"/api/v1/signatures/{home['id']}/default").status == 404
    assert bob_client.call("DELETE", f"/api/v1/signatures/{home['id']}").status == 404

    assert client.call("DELETE", f"/api/v1/signatures/{home['id']}").status == 204
    assert [s["name"] for s in client.get("/api/v1/signatures").json()] == ["Office"]
    assert client.call("DELETE", f"/api/v1/signatures/{home['id']}").status == 404


def _submit(system: MailSystem, sender: str, to: str, subject: str, receipt_to: str | None) -> None:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{sender.split('@')[1]}>"
    if receipt_to is not None:
        msg["Disposition-Notification-To"] = f"Bob <{receipt_to}>"
    msg.set_content("Did you read this?\n")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", system.submission_port, timeout=30) as client:
        client.starttls(context=context)
        client.login(sender, TEST_PASSWORD)
        assert client.sendmail(sender, [to], msg.as_bytes()) == {}


def test_read_receipt_is_sent_once_to_the_requester(mail_system: MailSystem, domain: str):
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    _submit(mail_system, bob, alice, "with receipt", receipt_to=bob)
    _submit(mail_system, bob, alice, "declined", receipt_to=bob)
    _submit(mail_system, bob, alice, "no receipt", receipt_to=None)
    rows = _wait_for(lambda: len(mail_system.messages_of(alice)) == 3 and mail_system.messages_of(alice), "mail")
    by_subject = {r["subject"]: r for r in rows}
    client = _client(mail_system, alice)
    bob_client = _client(mail_system, bob)

    wanted = by_subject["with receipt"]
    assert bob_client.post(f"/api/v1/messages/{wanted['id']}/read-receipt", {}).status == 404
    answered = client.post(f"/api/v1/messages/{wanted['id']}/read-receipt", {})
    assert answered.status == 200, answered.body
    receipt = answered.json()
    assert receipt["status"] == "sent" and receipt["requested_by"] == bob and receipt["sent_at"]
    assert receipt["message_id"] == wanted["id"]
    assert client.post(f"/api/v1/messages/{wanted['id']}/read-receipt", {}).status == 409

    [mdn_row] = _wait_for(lambda: mail_system.messages_of(bob), "the read receipt at bob")
    mdn = message_from_bytes((mail_system.maildir_root / mdn_row["maildir_path"]).read_bytes(), policy=policy.default)
    assert mdn.get_content_type() == "multipart/report"
    assert mdn.get_param("report-type") == "disposition-notification"
    assert mdn["In-Reply-To"] == wanted["message_id"] and mdn["Subject"] == "Read: with receipt"
    report = [p for p in mdn.walk() if p.get_content_type() == "message/disposition-notification"]
    assert len(report) == 1
    raw_report = report[0].as_bytes()
    assert b"Disposition: manual-action/MDN-sent-manually; displayed" in raw_report
    assert f"Original-Message-ID: {wanted['message_id']}".encode() in raw_report

    declined = client.post(f"/api/v1/messages/{by_subject['declined']['id']}/read-receipt", {"action": "ignore"})
    assert declined.status == 200 and declined.json()["status"] == "ignored" and declined.json()["sent_at"] is None
    assert client.post(f"/api/v1/messages/{by_subject['declined']['id']}/read-receipt", {}).status == 409
    assert client.post(f"/api/v1/messages/{by_subject['no receipt']['id']}/read-receipt", {}).status == 409

    listed = client.get("/api/v1/read-receipts").json()
    assert {(r["message_id"], r["status"]) for r in listed} == {
        (wanted["id"], "sent"), (by_subject["declined"]["id"], "ignored")}
    assert [r["status"] for r in client.get("/api/v1/read-receipts?status=ignored").json()] == ["ignored"]
    assert bob_client.get("/api/v1/read-receipts").json() == []


def test_bad_input_is_400(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = _client(mail_system, alice)
    assert client.post("/api/v1/attachments", {"file": "not multipart"}).status == 400
    assert _upload(client, "a.pdf", PDF, field="document").status == 400
    for body in (
        {"to": ["not-an-address"]},
        {"subject": "two\r\nlines"},
        {"attachment_ids": [1, 1]},
        {"attachment_ids": [0]},
        {"in_reply_to": "no brackets"},
        {"priority": "high"},
    ):
        response = client.post("/api/v1/drafts", body)
        assert response.status == 400, (body, response.body)
    for body in ({"name": ""}, {"name": "a\nb"}, {"name": "ok", "is_default": "perhaps"}, {"text": "no name"}):
        response = client.post("/api/v1/signatures", body)
        assert response.status == 400, (body, response.body)
    assert client.get("/api/v1/read-receipts?status=lost").status == 400
    assert client.post("/api/v1/messages/1/read-receipt", {"action": "maybe"}).status == 400
    assert mail_system.fetch("SELECT count(*) AS n FROM drafts d JOIN users u ON u.id = d.user_id "
                             "WHERE u.email = $1", alice)[0]["n"] == 0
