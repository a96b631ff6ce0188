"""Inbound SMTP delivery end to end: smtplib/swaks -> gateway -> shard -> Maildir + PostgreSQL."""

from __future__ import annotations

import re
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

import ray

from tests.integration.conftest import MailSystem
from whymail.sharding import rendezvous_owner

SWAKS = "/usr/bin/swaks"
# What the server adds in front of what was sent, each possibly folded: Authentication-Results
# (RFC 8601), X-Virus-Scanned (the test system scans with clamd) and one Received.
_FIELD = rb"[^\r\n]*(?:\r\n\t[^\r\n]*)*\r\n"
_RECEIVED = re.compile(
    rb"Authentication-Results: mx\.whymail\.test;" + _FIELD + rb"X-Virus-Scanned: clamav" + _FIELD
    + rb"Received: from " + _FIELD
)


def _message(sender: str, to: list[str], subject: str, body: str = "hello\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def _raw_message(
    sender: str, to: list[str], subject: str, body: bytes = b"hello\r\n", headers: bytes = b""
) -> bytes:
    """The bytes a client sends between DATA and the final dot (CRLF line ends, before dot-stuffing)."""
    return (
        f"From: {sender}\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n".encode() + headers + b"\r\n" + body
    )


def _smtp(mail_system: MailSystem) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=60)
    smtp.ehlo("client.example")
    return smtp


def _send(
    mail_system: MailSystem, sender: str, rcpts: list[str], data: bytes, mail_options: tuple = ()
) -> None:
    with _smtp(mail_system) as smtp:
        refused = smtp.sendmail(sender, rcpts, data, mail_options=list(mail_options))
    assert refused == {}


def _swaks(mail_system: MailSystem, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [
            SWAKS,
            "--server",
            f"127.0.0.1:{mail_system.smtp_port}",
            "--helo",
            "client.example",
            "--timeout",
            "60",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _local(email: str) -> str:
    return email.partition("@")[0]


def _only_stored_copy(mail_system: MailSystem, email: str, domain: str, sent: bytes):
    """The user has exactly one message: its row, its file, and the file is `Received:` + what was sent."""
    rows = mail_system.messages_of(email)
    assert len(rows) == 1, f"{email} has {len(rows)} messages"
    row = rows[0]
    path = mail_system.maildir_root / row["maildir_path"]
    assert path.is_file()
    assert mail_system.maildir_files(domain, _local(email)) == [path]
    data = path.read_bytes()
    assert row["size"] == len(data)
    assert data.endswith(sent)
    assert _RECEIVED.fullmatch(data[: len(data) - len(sent)]), data[:400]
    return row, data


def _storage_used(mail_system: MailSystem, email: str) -> int:
    [row] = mail_system.fetch("SELECT storage_used FROM users WHERE email = $1", email)
    return row["storage_used"]


def test_message_is_stored_in_maildir_and_database_after_250(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as smtp:
        code, _ = smtp.ehlo("client.example")
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes"):
            assert smtp.has_extn(ext), ext
        refused = smtp.send_message(_message("bob@example.org", [alice], "first"))
    assert refused == {}
    rows = mail_system.messages_of(alice)
    assert [r["subject"] for r in rows] == ["first"]
    assert rows[0]["uid"] == 1
    path = mail_system.maildir_root / rows[0]["maildir_path"]
    data = path.read_bytes()
    # Our trace fields come first: Authentication-Results (RFC 8601), the scan, then Received.
    assert data.startswith(b"Authentication-Results: mx.whymail.test;")
    assert b"\r\nReceived: from client.example ([127.0.0.1])" in data.split(b"\r\n\r\n")[0]
    assert b"by mx.whymail.test (WhyMail)" in data
    assert len(data) == rows[0]["size"]
    assert mail_system.maildir_files(domain, "alice") == [path]


def test_smtplib_single_recipient_file_equals_received_header_plus_sent_bytes(
    mail_system: MailSystem, domain: str
) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    sent = _raw_message("bob@example.org", [alice], "exact bytes", b"line one\r\n.leading dot\r\nlast\r\n")
    _send(mail_system, "bob@example.org", [alice], sent)
    row, data = _only_stored_copy(mail_system, alice, domain, sent)
    assert row["subject"] == "exact bytes"
    assert row["envelope_from"] == "bob@example.org"
    assert f"for <{alice}>".encode() in data.split(b"\r\n\r\n", 1)[0]


def test_swaks_single_recipient_is_stored(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    result = _swaks(
        mail_system,
        "--to",
        alice,
        "--from",
        "swaks@example.org",
        "--header",
        "Subject: from swaks",
        "--body",
        "sent by swaks",
    )
    assert "250 2.0.0" in result.stdout
    rows = mail_system.messages_of(alice)
    assert [(r["subject"], r["uid"], r["envelope_from"]) for r in rows] == [
        ("from swaks", 1, "swaks@example.org")
    ]
    data = (mail_system.maildir_root / rows[0]["maildir_path"]).read_bytes()
    # Our trace fields come first: Authentication-Results (RFC 8601), the scan, then Received.
    assert data.startswith(b"Authentication-Results: mx.whymail.test;")
    assert b"\r\nReceived: from client.example ([127.0.0.1])" in data.split(b"\r\n\r\n")[0]
    assert b"sent by swaks" in data
    assert len(data) == rows[0]["size"]


def test_smtplib_ten_recipients_in_one_transaction_each_get_one_copy(
    mail_system: MailSystem, domain: str
) -> None:
    users = [f"user{i}@{domain}" for i in range(10)]
    for user in users:
        mail_system.add_user(user)
    sent = _raw_message("bob@example.org", users, "to ten")
    _send(mail_system, "bob@example.org", users, sent)
    paths = set()
    for user in users:
        row, _ = _only_stored_copy(mail_system, user, domain, sent)
        assert row["uid"] == 1
        paths.add(row["maildir_path"])
    assert len(paths) == 10  # one file per mailbox, none shared


def test_swaks_ten_recipients_in_one_transaction_each_get_one_copy(
    mail_system: MailSystem, domain: str
) -> None:
    users = [f"user{i}@{domain}" for i in range(10)]
    for user in users:
        mail_system.add_user(user)
    result = _swaks(
        mail_system,
        "--to",
        ",".join(users),
        "--from",
        "swaks@example.org",
        "--header",
        "Subject: swaks to ten",
    )
    assert result.stdout.count("250 2.1.5") == 10
    for user in users:
        rows = mail_system.messages_of(user)
        assert [(r["subject"], r["uid"]) for r in rows] == [("swaks to ten", 1)], user
        assert len(mail_system.maildir_files(domain, _local(user))) == 1


def test_recipients_owned_by_different_shards_all_get_the_message(
    mail_system: MailSystem, domain: str
) -> None:
    shard_names = list(mail_system.cluster.shard_names)
    assert len(shard_names) == 3
    one_per_shard: dict[str, str] = {}
    for i in range(60):
        email = f"s{i}@{domain}"
        user_id = mail_system.add_user(email)
        one_per_shard.setdefault(rendezvous_owner(user_id, shard_names), email)
        if len(one_per_shard) == len(shard_names):
            break
    assert set(one_per_shard) == set(shard_names)
    users = list(one_per_shard.values())
    gateway = mail_system.gateway()
    before = ray.get(gateway.stats.remote())["shard_items"]
    sent = _raw_message("bob@example.org", users, "across shards")
    _send(mail_system, "bob@example.org", users, sent)
    after = ray.get(gateway.stats.remote())["shard_items"]
    for shard in shard_names:
        assert after.get(shard, 0) - before.get(shard, 0) >= 1, shard
    for user in users:
        _only_stored_copy(mail_system, user, domain, sent)


def test_alias_to_two_users_delivers_one_copy_to_each(mail_system: MailSystem, domain: str) -> None:
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    mail_system.add_alias(f"team@{domain}", [alice, bob])
    sent = _raw_message("carol@example.org", [f"team@{domain}"], "to the team")
    _send(mail_system, "carol@example.org", [f"team@{domain}"], sent)
    _only_stored_copy(mail_system, alice, domain, sent)
    _only_stored_copy(mail_system, bob, domain, sent)
    assert not (mail_system.maildir_root / domain / "team").exists()


def test_alias_and_its_member_in_one_transaction_give_the_member_one_copy(
    mail_system: MailSystem, domain: str
) -> None:
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    mail_system.add_alias(f"team@{domain}", [alice, bob])
    sent = _raw_message("carol@example.org", [f"team@{domain}", alice], "alias and member")
    _send(mail_system, "carol@example.org", [f"team@{domain}", alice], sent)
    _only_stored_copy(mail_system, alice, domain, sent)
    _only_stored_copy(mail_system, bob, domain, sent)


def test_catch_all_receives_mail_for_unknown_addresses_but_not_for_real_users(
    mail_system: MailSystem, domain: str
) -> None:
    catcher, real = f"catcher@{domain}", f"real@{domain}"
    mail_system.add_user(catcher)
    mail_system.add_user(real)
    mail_system.add_alias(f"@{domain}", [catcher])
    to_nobody = _raw_message("bob@example.org", [f"nobody@{domain}"], "for nobody")
    to_real = _raw_message("bob@example.org", [real], "for real")
    _send(mail_system, "bob@example.org", [f"nobody@{domain}"], to_nobody)
    _send(mail_system, "bob@example.org", [real], to_real)
    row, _ = _only_stored_copy(mail_system, catcher, domain, to_nobody)
    assert row["subject"] == "for nobody"
    _only_stored_copy(mail_system, real, domain, to_real)


def test_8bit_body_with_body_8bitmime_is_stored_byte_for_byte(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    body = "Grüße aus Köln — ünïcödé ✓ 日本語\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    sent = _raw_message(
        "bob@example.org",
        [alice],
        "eight bit",
        body,
        headers=(
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
        ),
    )
    with _smtp(mail_system) as smtp:
        assert smtp.has_extn("8bitmime")
        assert smtp.sendmail("bob@example.org", [alice], sent, mail_options=["BODY=8BITMIME"]) == {}
    row, data = _only_stored_copy(mail_system, alice, domain, sent)
    assert row["subject"] == "eight bit"
    assert "Grüße aus Köln".encode() in data


def test_smtputf8_recipient_with_non_ascii_local_part_is_stored(mail_system: MailSystem, domain: str) -> None:
    jorg = f"jörg@{domain}"
    mail_system.add_user(jorg)
    sender = "andré@example.org"
    sent = _raw_message(sender, [jorg], "Grüße, Jörg", "Hallo Jörg\r\n".encode())
    with _smtp(mail_system) as smtp:
        assert smtp.has_extn("smtputf8")
        refused = smtp.sendmail(sender, [jorg], sent, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}
    row, data = _only_stored_copy(mail_system, jorg, domain, sent)
    assert row["subject"] == "Grüße, Jörg"
    assert row["envelope_from"] == sender
    assert b" with UTF8SMTP id " in data.split(b"\r\n\r\n", 1)[0]
    assert f"for <{jorg}>".encode() in data.split(b"\r\n\r\n", 1)[0]
    assert row["maildir_path"].startswith(f"{domain}/jörg/")


def test_smtputf8_recipient_matches_in_any_case(mail_system: MailSystem, domain: str) -> None:
    jorg = f"jörg@{domain}"
    mail_system.add_user(jorg)
    sent = _raw_message("bob@example.org", [f"JÖRG@{domain.upper()}"], "upper case")
    with _smtp(mail_system) as smtp:
        refused = smtp.sendmail(
            "bob@example.org", [f"JÖRG@{domain.upper()}"], sent, mail_options=["SMTPUTF8"]
        )
    assert refused == {}
    _only_stored_copy(mail_system, jorg, domain, sent)


def test_ten_megabyte_message_is_stored_whole(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789-\r\n"  # 76 bytes
    body = line * (10 * 1024 * 1024 // len(line) + 1)
    sent = _raw_message("bob@example.org", [alice], "ten megabytes", body)
    assert 10 * 1024 * 1024 < len(sent) < 12 * 1024 * 1024
    with _smtp(mail_system) as smtp:
        refused = smtp.sendmail("bob@example.org", [alice], sent, mail_options=[f"SIZE={len(sent)}"])
    assert refused == {}
    row, data = _only_stored_copy(mail_system, alice, domain, sent)
    assert row["size"] > len(sent)
    assert _storage_used(mail_system, alice) == row["size"]


def test_uids_ascend_from_one_per_mailbox(mail_system: MailSystem, domain: str) -> None:
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    mail_system.add_user(alice)
    mail_system.add_user(bob)
    with _smtp(mail_system) as smtp:
        for n in range(1, 6):
            smtp.sendmail("x@example.org", [alice], _raw_message("x@example.org", [alice], f"a{n}"))
            if n % 2 == 0:
                smtp.sendmail("x@example.org", [bob], _raw_message("x@example.org", [bob], f"b{n}"))
    assert [(r["uid"], r["subject"]) for r in mail_system.messages_of(alice)] == [
        (1, "a1"),
        (2, "a2"),
        (3, "a3"),
        (4, "a4"),
        (5, "a5"),
    ]
    assert [(r["uid"], r["subject"]) for r in mail_system.messages_of(bob)] == [(1, "b2"), (2, "b4")]
    files = mail_system.maildir_files(domain, "alice")
    assert (
        sorted(mail_system.maildir_root / r["maildir_path"] for r in mail_system.messages_of(alice)) == files
    )


def test_storage_used_grows_by_each_stored_size(mail_system: MailSystem, domain: str) -> None:
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    assert _storage_used(mail_system, alice) == 0
    expected = 0
    for n, size in enumerate((100, 5_000, 300_000)):
        sent = _raw_message("bob@example.org", [alice], f"size {n}", (b"x" * 70 + b"\r\n") * (size // 72))
        _send(mail_system, "bob@example.org", [alice], sent)
        newest = mail_system.messages_of(alice)[-1]
        assert newest["subject"] == f"size {n}"
        stored = Path(mail_system.maildir_root / newest["maildir_path"]).stat().st_size
        assert newest["size"] == stored
        expected += stored
        assert _storage_used(mail_system, alice) == expected
    assert sum(r["size"] for r in mail_system.messages_of(alice)) == expected


def test_starttls_is_offered_and_the_received_header_says_esmtps(mail_system: MailSystem, domain: str) -> None:
    import ssl

    alice = f"tls@{domain}"
    mail_system.add_user(alice)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as smtp:
        smtp.ehlo("tls.example")
        assert smtp.has_extn("starttls")
        code, _ = smtp.starttls(context=context)
        assert code == 220
        smtp.ehlo("tls.example")
        assert not smtp.has_extn("starttls"), "STARTTLS must not be offered twice (RFC 3207 §4.2)"
        assert smtp.send_message(_message("bob@example.org", [alice], "secret")) == {}
    rows = mail_system.messages_of(alice)
    assert [r["subject"] for r in rows] == ["secret"]
    head = (mail_system.maildir_root / rows[0]["maildir_path"]).read_bytes()[:300]
    assert b"with ESMTPS id" in head


def test_the_maildir_is_standard_maildir_plus_plus(mail_system: MailSystem, domain: str) -> None:
    """Python's own Maildir reader (as mutt/Dovecot would) sees the message and the folders."""
    import mailbox

    alice = f"mdir@{domain}"
    mail_system.add_user(alice)
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as smtp:
        smtp.send_message(_message("bob@example.org", [alice], "maildir reader"))
    inbox = mailbox.Maildir(mail_system.maildir_root / domain / "mdir", factory=None, create=False)
    messages = list(inbox)
    assert [m["Subject"] for m in messages] == ["maildir reader"]
    assert messages[0].get_subdir() == "new"
    stored_name = mail_system.messages_of(alice)[0]["maildir_path"].rsplit("/", 1)[1]
    assert list(inbox.keys()) == [stored_name.split(":")[0]]
