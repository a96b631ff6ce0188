"""Submission on 587 (STARTTLS + AUTH) and 465 (implicit TLS): who may send what, and where it goes.

Real clients (smtplib, swaks) against the running system; local recipients are delivered by the
DeliveryQueue through the shards, and the sender's copy lands in Sent before the 250.
"""

from __future__ import annotations

import email
import smtplib
import ssl
import subprocess
import time
import uuid

import pytest

from tests.integration.conftest import TEST_PASSWORD, MailSystem


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _message(sender: str, to: str, subject: str, body: str = "Hello there.\r\n") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}"
    ).encode()


def _submit(system: MailSystem, user: str, to: list[str], data: bytes, *, sender: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(user, TEST_PASSWORD)
        client.sendmail(sender or user, to, data)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll a condition that is only observable from outside (the queue works asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_submission_with_swaks_delivers_locally_and_keeps_a_sent_copy(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    bob = f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    subject = f"hello {uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{mail_system.submission_port}", "--tls", "--auth", "PLAIN",
         "--auth-user", alice, "--auth-password", TEST_PASSWORD, "--from", alice, "--to", bob,
         "--header", f"Subject: {subject}", "--body", "sent with swaks"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK: queued as" in result.stdout
    sent = mail_system.messages_of(alice, "Sent")
    assert [row["subject"] for row in sent] == [subject]  # stored before the 250
    assert "\\Seen" in list(sent[0]["flags"])
    inbox = wait_for(lambda: mail_system.messages_of(bob), what="bob's copy")
    assert [row["subject"] for row in inbox] == [subject]
    raw = mail_system.maildir_files(domain, "bob")[0].read_bytes()
    parsed = email.message_from_bytes(raw)
    assert parsed["Message-ID"] and parsed["Date"]  # added by the submission server (RFC 6409 §8)
    assert "with ESMTPSA" in raw.decode()  # RFC 3848


def test_auth_is_offered_only_after_starttls_and_required_before_mail(mail_system: MailSystem, domain: str):
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code == 538 and b"5.7.11" in text
        code, text = client.docmd("MAIL", f"FROM:<someone@{domain}>")
        assert code == 530 and b"5.7.0" in text
        client.starttls(context=_tls())
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]
        code, text = client.docmd("MAIL", f"FROM:<someone@{domain}>")
        assert code == 530 and b"5.7.0" in text


def test_port_25_offers_no_auth(mail_system: MailSystem):
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code == 503 and b"5.5.1" in text


def test_wrong_password_is_535_and_login_mechanism_works(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(alice, "not the password")
        assert refused.value.smtp_code == 535 and b"5.7.8" in refused.value.smtp_error
        client.user, client.password = alice, TEST_PASSWORD
        code, text = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235 and b"2.7.0" in text


def test_sender_must_be_the_user_or_an_alias_of_theirs(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    carol = f"carol@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(carol)
    mail_system.add_alias(f"sales@{domain}", [alice])
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(alice, TEST_PASSWORD)
        code, text = client.docmd("MAIL", f"FROM:<{carol}>")
        assert code == 553 and b"5.7.1" in text
        code, text = client.docmd("MAIL", "FROM:<ceo@elsewhere.test>")
        assert code == 553 and b"5.7.1" in text
        code, text = client.docmd("MAIL", "FROM:<>")
        assert code == 553
        code, _ = client.docmd("MAIL", f"FROM:<sales@{domain}>")
        assert code == 250
        client.rset()
        code, _ = client.docmd("MAIL", f"FROM:<{alice.upper()}>")
        assert code == 250


def test_implicit_tls_submission_on_465(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    bob = f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    with smtplib.SMTP_SSL("127.0.0.1", mail_system.smtps_port, timeout=30, context=_tls()) as client:
        reply = client.ehlo("client.test")
        assert not client.has_extn("starttls")
        assert "PLAIN" in client.esmtp_features.get("auth", ""), reply
        client.login(alice, TEST_PASSWORD)
        refused = client.sendmail(alice, [bob], _message(alice, bob, "over 465"))
        assert refused == {}
    wait_for(lambda: mail_system.messages_of(bob), what="delivery over 465")
    assert b"with ESMTPSA" in mail_system.maildir_files(domain, "bob")[0].read_bytes()


def test_unknown_local_recipient_is_refused_at_rcpt(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(alice, TEST_PASSWORD)
        client.mail(alice)
        code, text = client.rcpt(f"nobody@{domain}")
        assert code == 550 and b"5.1.1" in text


def test_daily_send_limit(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    user_id = mail_system.add_user(alice)
    limit = mail_system.runtime.config.limits.per_user_daily_send
    # Earlier submissions of today, as the queue recorded them.
    mail_system.fetch(
        """INSERT INTO outbound_queue (delivery_id, user_id, sender, recipient_domain, recipients, message_path,
                                      status)
           SELECT gen_random_uuid(), $1, $2, 'elsewhere.test', ARRAY['x@elsewhere.test'],
                  '.spool/00/new/' || md5(random()::text), 'sent'
           FROM generate_series(1, $3)""",
        user_id, alice, limit,
    )
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(alice, TEST_PASSWORD)
        code, text = client.docmd("MAIL", f"FROM:<{alice}>")
        assert code == 550 and b"5.4.5" in text
    assert mail_system.messages_of(alice, "Sent") == []


def test_smtp_auth_failures_lock_the_account_for_imap_too(mail_system: MailSystem, domain: str):
    import concurrent.futures
    import imaplib

    victim = f"victim@{domain}"
    mail_system.add_user(victim)
    limit = mail_system.runtime.config.auth.max_failures_per_account

    def guess(n: int) -> int:
        with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=60) as client:
            client.starttls(context=_tls())
            try:
                client.login(victim, f"guess {n}")
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
            return 235

    with concurrent.futures.ThreadPoolExecutor(limit) as pool:
        assert set(pool.map(guess, range(limit))) == {535}
    # Locked now, over every protocol: the right password is refused too (the same answer as a wrong one).
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=60) as client:
        client.starttls(context=_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(victim, TEST_PASSWORD)
    imap = imaplib.IMAP4("127.0.0.1", mail_system.cluster.imap_port, timeout=60)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(victim, TEST_PASSWORD)
    finally:
        imap.shutdown()
    rows = mail_system.fetch(
        "SELECT count(*) AS n FROM audit_logs WHERE action = 'login_failed' AND details->>'protocol' = 'smtp'"
    )
    assert rows[0]["n"] >= limit


def test_header_from_must_be_owned_too(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(f"billing@{domain}")
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(alice, TEST_PASSWORD)
        client.mail(alice)
        client.rcpt("friend@elsewhere.test")
        code, text = client.data(_message(f"Billing <billing@{domain}>", "friend@elsewhere.test", "pay now"))
        assert code == 553 and b"5.7.1" in text and b"From header" in text
    assert mail_system.fetch("SELECT 1 FROM outbound_queue WHERE sender = $1", alice) == []
