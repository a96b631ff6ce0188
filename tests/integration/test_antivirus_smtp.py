"""The antivirus plugin on the SMTP paths, against the real clamd of the test session."""

from __future__ import annotations

import base64
import smtplib

from tests.integration.conftest import TEST_PASSWORD, MailSystem
from tests.integration.test_submission import _message, _tls
from tests.support.clamd import EICAR


def _with_attachment(sender: str, to: str, payload: bytes) -> bytes:
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        '--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="x.com"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--b1--\r\n"
    ).encode()


def test_inbound_virus_is_refused_with_its_name_and_nothing_is_stored(mail_system: MailSystem, domain: str):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("someone@elsewhere.test")
        client.rcpt(bob)
        code, text = client.data(_with_attachment("someone@elsewhere.test", bob, EICAR))
        assert code == 554 and b"5.7.1" in text and b"WhyMail.Test.EICAR" in text
        client.rset()
        client.sendmail("someone@elsewhere.test", [bob], _message("someone@elsewhere.test", bob, "clean"))
    rows = mail_system.messages_of(bob)
    assert [r["subject"] for r in rows] == ["clean"]
    raw = mail_system.maildir_files(domain, "bob")[0].read_bytes()
    assert b"X-Virus-Scanned: clamav" in raw


def test_submitted_virus_is_refused(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(alice, TEST_PASSWORD)
        client.mail(alice)
        client.rcpt("friend@elsewhere.test")
        code, text = client.data(_with_attachment(alice, "friend@elsewhere.test", EICAR))
        assert code == 554 and b"5.7.1" in text
    assert mail_system.messages_of(alice, "Sent") == []
    assert mail_system.fetch("SELECT 1 FROM outbound_queue WHERE sender = $1", alice) == []


def test_clamd_unreachable_means_451_and_no_loss(mail_system: MailSystem, domain: str, clamd):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    clamd.stop()
    try:
        with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("someone@elsewhere.test")
            client.rcpt(bob)
            code, text = client.data(_message("someone@elsewhere.test", bob, "scanner down"))
            assert code == 451 and b"4.7.1" in text
    finally:
        clamd.start()
    assert mail_system.messages_of(bob) == []
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.sendmail("someone@elsewhere.test", [bob], _message("someone@elsewhere.test", bob, "scanner up"))
    assert [r["subject"] for r in mail_system.messages_of(bob)] == ["scanner up"]
