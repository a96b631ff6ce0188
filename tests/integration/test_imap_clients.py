"""IMAP end to end with real clients: SMTP delivery -> IMAP gateway -> shard writes (imaplib)."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import threading

from tests.integration.conftest import TEST_PASSWORD, MailSystem


def _deliver(system: MailSystem, rcpt: str, subject: str, body: str = "hello imap\r\n") -> None:
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", [rcpt], f"From: sender@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{body}")


def _login(system: MailSystem, email: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", system.cluster.imap_port, timeout=30)
    typ, _ = client.login(email, TEST_PASSWORD)
    assert typ == "OK"
    return client


def test_mail_delivered_over_smtp_is_read_flagged_and_expunged_over_imap(mail_system: MailSystem, domain: str) -> None:
    user = f"reader@{domain}"
    mail_system.add_user(user)
    _deliver(mail_system, user, "first over imap")
    _deliver(mail_system, user, "second over imap")
    client = _login(mail_system, user)
    try:
        typ, data = client.select("INBOX")
        assert typ == "OK" and data == [b"2"]
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        subjects = [part[1] for part in data if isinstance(part, tuple)]
        assert subjects == [b"Subject: first over imap\r\n\r\n", b"Subject: second over imap\r\n\r\n"]
        typ, data = client.fetch("1", "(BODY[TEXT])")
        assert typ == "OK" and data[0][1] == b"hello imap\r\n"
        typ, data = client.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0], "a non-PEEK body fetch sets \\Seen"
        typ, _ = client.store("2", "+FLAGS", "(\\Deleted)")
        assert typ == "OK"
        typ, data = client.expunge()
        assert typ == "OK" and data == [b"2"]
        typ, data = client.search(None, "ALL")
        assert data == [b"1"]
    finally:
        client.logout()
    rows = mail_system.messages_of(user)
    assert [r["subject"] for r in rows] == ["first over imap"]
    assert "\\Seen" in rows[0]["flags"]


def test_wrong_password_is_refused_with_authenticationfailed(mail_system: MailSystem, domain: str) -> None:
    user = f"wrong@{domain}"
    mail_system.add_user(user)
    client = imaplib.IMAP4("127.0.0.1", mail_system.cluster.imap_port, timeout=30)
    try:
        try:
            client.login(user, "not the password")
            raise AssertionError("login with a wrong password succeeded")
        except imaplib.IMAP4.error as exc:
            assert "AUTHENTICATIONFAILED" in str(exc)
    finally:
        client.shutdown()


def test_implicit_tls_port_serves_imaps(mail_system: MailSystem, domain: str) -> None:
    user = f"tls@{domain}"
    mail_system.add_user(user)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4_SSL("127.0.0.1", mail_system.cluster.imaps_port, ssl_context=context, timeout=30)
    try:
        assert client.login(user, TEST_PASSWORD)[0] == "OK"
        typ, data = client.list()
        names = b" ".join(data)
        for name in (b"INBOX", b"Sent", b"Drafts", b"Archive", b"Trash", b"Junk"):
            assert name in names
        assert b"\\Sent" in names and b"\\Trash" in names
    finally:
        client.logout()


def test_idle_client_sees_new_mail_delivered_over_smtp(mail_system: MailSystem, domain: str) -> None:
    user = f"idle@{domain}"
    mail_system.add_user(user)
    client = _login(mail_system, user)
    try:
        client.select("INBOX")
        tag = client._new_tag().decode()
        client.send(f"{tag} IDLE\r\n".encode())
        assert client.readline().startswith(b"+")
        delivered = threading.Thread(target=_deliver, args=(mail_system, user, "while idling"))
        delivered.start()
        client.sock.settimeout(10)
        line = client.readline()
        delivered.join()
        assert line.strip() == b"* 1 EXISTS", line
        client.send(b"DONE\r\n")
        while not (line := client.readline()).startswith(tag.encode()):
            pass
        assert b"OK" in line
    finally:
        client.logout()


def test_starttls_upgrades_the_plain_port_and_discards_pipelined_bytes(mail_system: MailSystem, domain: str) -> None:
    user = f"starttls@{domain}"
    mail_system.add_user(user)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4("127.0.0.1", mail_system.cluster.imap_port, timeout=30)
    try:
        assert "STARTTLS" in client.capabilities
        typ, _ = client.starttls(ssl_context=context)
        assert typ == "OK"
        assert isinstance(client.sock, ssl.SSLSocket)
        assert "STARTTLS" not in client.capabilities, "STARTTLS is not offered again after TLS"
        assert client.login(user, TEST_PASSWORD)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()


def test_starttls_command_injection_is_not_executed(mail_system: MailSystem, domain: str) -> None:
    """RFC 3501 §6.2.1: a command pipelined behind STARTTLS in clear text must never run."""
    import socket

    raw = socket.create_connection(("127.0.0.1", mail_system.cluster.imap_port), timeout=30)
    try:
        assert raw.recv(4096).startswith(b"* OK")
        raw.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
        assert b"a BAD" in reply and b"* BYE" in reply, "a client that pipelines after STARTTLS is disconnected"
        assert b"b OK" not in reply and b"* CAPABILITY" not in reply, "the injected command ran"
    finally:
        raw.close()
