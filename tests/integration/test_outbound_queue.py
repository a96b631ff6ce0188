"""The outbound queue end to end: submission → DeliveryQueue → a remote MX found through the test DNS.

Remote MXes are real SMTP servers on loopback: Postfix's `smtp-sink` and a scriptable aiosmtpd sink
(for 4xx/5xx answers), each on its own 127.0.0.N address at the session's MX port, named by MX and A
records in the loopback DNS server the whole system resolves through.
"""

from __future__ import annotations

import asyncio
import email
import itertools
import smtplib
import subprocess
import sys
import uuid
from contextlib import contextmanager

import asyncpg
import dkim as dkimpy
import pytest
import ray

from tests.integration.conftest import TEST_PASSWORD, MailSystem
from tests.integration.test_submission import _message, _tls, wait_for
from tests.support.sink import SmtpSink
from tests.support.smtpsink import PostfixSink

_addresses = itertools.count(2)


def _next_ip() -> str:
    n = next(_addresses)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@contextmanager
def remote_domain(dns_zone, mx_port: int, *, postfix: bool = False, **sink_options):
    """A remote domain whose MX is a fresh sink on its own loopback address."""
    ip = _next_ip()
    name = f"r{uuid.uuid4().hex[:10]}.test"
    dns_zone.add(f"{name}. 60 IN MX 10 mx.{name}.\nmx.{name}. 60 IN A {ip}\n")
    sink = (
        PostfixSink(host=ip, port=mx_port) if postfix else SmtpSink(host=ip, port=mx_port, **sink_options)
    )
    with sink:
        yield name, sink


def _queue_rows(system: MailSystem, sender: str) -> list:
    return system.fetch("SELECT * FROM outbound_queue WHERE sender = $1 ORDER BY id", sender)


def _submit(system: MailSystem, user: str, to: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", system.submission_port, timeout=30) as client:
        client.starttls(context=_tls())
        client.login(user, TEST_PASSWORD)
        client.sendmail(user, to, data)


def _publish_dkim_key(system: MailSystem, dns_zone, domain: str) -> str:
    """`whymailctl domain dkim` for real, then its record into the test DNS; returns the selector."""
    env = {"WHYMAIL_DB_DSN": system.dsn, "PATH": "/usr/bin:/bin"}
    before = ray.get(system.gateway().directory_version.remote())
    result = subprocess.run(
        [sys.executable, "-m", "whymail.cli.ctl", "domain", "dkim", domain, "--selector", "s1", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    import json

    record = json.loads(result.stdout)["dns_record"]
    assert record.startswith(f"s1._domainkey.{domain}.") and "v=DKIM1" in record and "p=" in record
    dns_zone.add(record.replace(" IN TXT ", " 60 IN TXT "))
    ray.get(system.gateway().wait_directory_version.remote(before + 1, 10.0))
    return "s1"


def test_remote_delivery_to_smtp_sink_is_dkim_signed(mail_system: MailSystem, domain: str, dns_zone, mx_port):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    _publish_dkim_key(mail_system, dns_zone, domain)
    with remote_domain(dns_zone, mx_port, postfix=True) as (remote, sink):
        rcpts = [f"r1@{remote}", f"r2@{remote}"]
        swaks = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{mail_system.submission_port}", "--tls", "--auth", "LOGIN",
             "--auth-user", alice, "--auth-password", TEST_PASSWORD, "--from", alice, "--to", ",".join(rcpts),
             "--header", "Subject: to the world", "--body", "signed and relayed"],
            capture_output=True, text=True, timeout=60,
        )
        assert swaks.returncode == 0 and "250 2.0.0 OK: queued as" in swaks.stdout, swaks.stdout + swaks.stderr
        dumped = sink.wait_for_messages(1, timeout=30)
        assert len(dumped) == 1
        assert sorted(dumped[0].rcpt_tos) == sorted(rcpts)
        data = dumped[0].data
    assert data.startswith(b"DKIM-Signature:")

    def dns(name, timeout=5):
        from whymail.dnsresolve import DnsResolver

        resolver = DnsResolver([dns_zone.address], 2.0)
        texts = resolver.txt_sync(name.decode().rstrip("."))
        return texts[0].encode() if texts else None

    assert dkimpy.verify(data, dnsfunc=dns), "the receiving side must see a valid DKIM signature"
    rows = wait_for(lambda: [r for r in _queue_rows(mail_system, alice) if r["status"] == "sent"], what="sent")
    assert rows[0]["attempts"] == 1


def test_two_temporary_failures_then_delivered_once(mail_system: MailSystem, domain: str, dns_zone, mx_port):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("DATA", "451 4.3.0 try again later", times=2)
        _submit(mail_system, alice, [f"bob@{remote}"], _message(alice, f"bob@{remote}", "retry me"))
        row = wait_for(
            lambda: next((r for r in _queue_rows(mail_system, alice) if r["status"] == "sent"), None),
            timeout=30, what="delivery after two 451s",
        )
        assert row["attempts"] == 3
        assert len(sink.messages) == 1 and sink.messages[0].rcpt_tos == [f"bob@{remote}"]
        assert sink.verbs().count("DATA") == 3


def test_permanent_failure_bounces_a_dsn_into_the_senders_inbox(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("RCPT", "550 5.1.1 no such user here", match="ghost@")
        _submit(mail_system, alice, [f"ghost@{remote}", f"real@{remote}"],
                _message(alice, f"ghost@{remote}", "partly undeliverable"))
        dsn_rows = wait_for(lambda: mail_system.messages_of(alice), timeout=30, what="the DSN")
        assert [m.rcpt_tos for m in sink.messages] == [[f"real@{remote}"]]
    row = _queue_rows(mail_system, alice)[0]
    assert row["status"] == "failed"
    assert "550" in row["last_error"] and "no such user here" in row["last_error"]
    assert len(dsn_rows) == 1
    raw = mail_system.maildir_files(domain, "alice")
    dsn = email.message_from_bytes(next(p for p in raw if "/Sent/" not in str(p) and "/.Sent/" not in str(p))
                                   .read_bytes())
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(part for part in dsn.walk() if part.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert f"Final-Recipient: rfc822; ghost@{remote}" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    # The DSN went out with the null sender: it can never be bounced itself.
    bounce_rows = mail_system.fetch("SELECT sender, status FROM outbound_queue WHERE $1 = ANY(recipients)", alice)
    assert [(r["sender"], r["status"]) for r in bounce_rows] == [("", "sent")]


def test_a_bounce_is_never_bounced(mail_system: MailSystem, dns_zone, mx_port):
    from whymail.queue.spool import Spool
    from whymail.queue.submit import queue_message

    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("RCPT", "550 5.1.1 gone")

        async def enqueue():
            pool = await asyncpg.create_pool(mail_system.dsn, min_size=1, max_size=2)
            try:
                return await queue_message(
                    pool, Spool(mail_system.maildir_root), mail_system.runtime.config.queue,
                    data=b"From: MAILER-DAEMON@x.test\r\nSubject: bounce\r\n\r\nbody\r\n", sender="",
                    recipients=[f"gone@{remote}"], user_id=None,
                )
            finally:
                await pool.close()

        delivery_id = asyncio.run(enqueue())
        rows = wait_for(
            lambda: [r for r in mail_system.fetch("SELECT * FROM outbound_queue WHERE delivery_id = $1", delivery_id)
                     if r["status"] == "failed"],
            what="the failed bounce",
        )
        assert len(rows) == 1
    # No DSN about a DSN: nothing addressed to the null sender, nothing derived from this row.
    derived = mail_system.fetch(
        "SELECT count(*) AS n FROM outbound_queue WHERE created_at >= $1 AND sender = '' AND recipients = '{}'",
        rows[0]["created_at"],
    )
    assert derived[0]["n"] == 0


def test_killing_the_delivery_queue_mid_batch_loses_and_duplicates_nothing(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    queue = mail_system.cluster.queues[0]
    pid_before = ray.get(queue.pid.remote())
    count = 60
    with remote_domain(dns_zone, mx_port, reply_delay=0.05) as (remote, sink):
        with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
            client.starttls(context=_tls())
            client.login(alice, TEST_PASSWORD)
            for i in range(count):
                client.sendmail(alice, [f"n{i}@{remote}"], _message(alice, f"n{i}@{remote}", f"msg {i}"))
        wait_for(lambda: len(sink.messages) >= 5, what="the first deliveries")
        # Kill when every connection has sent a message and waits for its reply: no client is then
        # between a 250 and its commit (killed in that window, any MTA sends the message again, RFC
        # 1047; the queue commits each answer at once to keep the window to a few milliseconds).
        sink.hold()
        wait_for(lambda: sink.open_connections > 0 and sink.held == sink.open_connections,
                 what="every connection waiting for its DATA reply")
        ray.kill(queue, no_restart=False)  # returns before the process is gone
        wait_for(lambda: sink.open_connections == 0, what="the killed queue's connections to close")
        sink.release()
        wait_for(lambda: len([r for r in _queue_rows(mail_system, alice) if r["status"] == "sent"]) == count,
                 timeout=60, what="every message sent after the restart")
        received = [m.rcpt_tos[0] for m in sink.messages]
        dups = {r for r in received if received.count(r) > 1}
        debug = [(m.rcpt_tos[0], m.connection) for m in sink.messages if m.rcpt_tos[0] in dups]
        conns = {c for _, c in debug}
        debug_cmds = [c for c in sink.commands if c[0] in conns]
    assert not dups, (debug, debug_cmds, pid_before)
    assert sorted(received) == sorted(f"n{i}@{remote}" for i in range(count)), "lost or duplicated"
    assert ray.get(queue.pid.remote()) != pid_before


def test_whymailctl_queue_list_retry_delete(mail_system: MailSystem, domain: str, dns_zone, mx_port):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    env = {"WHYMAIL_DB_DSN": mail_system.dsn, "PATH": "/usr/bin:/bin"}

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "whymail.cli.ctl", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("RCPT", "550 5.7.1 not today", times=1)
        _submit(mail_system, alice, [f"x@{remote}"], _message(alice, f"x@{remote}", "retry by hand"))
        row = wait_for(lambda: next((r for r in _queue_rows(mail_system, alice) if r["status"] == "failed"), None),
                       what="the failure")
        listed = ctl("queue", "list", "--status", "failed")
        assert listed.returncode == 0 and str(row["id"]) in listed.stdout and "not today" in listed.stdout
        retried = ctl("queue", "retry", str(row["id"]))
        assert retried.returncode == 0, retried.stderr
        wait_for(lambda: next((r for r in _queue_rows(mail_system, alice) if r["status"] == "sent"), None),
                 what="delivery after the retry")
        assert [m.rcpt_tos for m in sink.messages] == [[f"x@{remote}"]]
    deleted = ctl("queue", "delete", str(row["id"]))
    assert deleted.returncode == 0 and "deleted 1 entry" in deleted.stdout
    missing = ctl("queue", "delete", str(row["id"]))
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = ctl("queue", "list", "--status", "bogus")
    assert bad.returncode == 2 and "unknown status" in bad.stderr


@pytest.mark.parametrize("policy,expect", [("reject", 550), ("quarantine", "Junk"), ("none", "INBOX")])
def test_inbound_dmarc_policy(mail_system: MailSystem, domain: str, dns_zone, policy: str, expect):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    sender_domain = f"s{uuid.uuid4().hex[:10]}.test"
    # SPF allows another host only and there is no DKIM signature: DMARC fails.
    dns_zone.add(
        f'{sender_domain}. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"\n'
        f'_dmarc.{sender_domain}. 60 IN TXT "v=DMARC1; p={policy}"\n'
    )
    data = _message(f"ceo@{sender_domain}", bob, f"dmarc {policy}")
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.ehlo("mail.example.test")
        client.mail(f"ceo@{sender_domain}")
        client.rcpt(bob)
        code, text = client.data(data)
    if expect == 550:
        assert code == 550 and b"5.7.1" in text and b"DMARC" in text
        assert mail_system.messages_of(bob) == []
        return
    assert code == 250
    assert len(mail_system.messages_of(bob, expect)) == 1
    raw = mail_system.maildir_files(domain, "bob")[0].read_bytes().decode()
    assert raw.startswith(f"Authentication-Results: {mail_system.hostname};")
    assert "spf=fail" in raw and "dmarc=fail" in raw


def test_inbound_spf_pass_is_reported(mail_system: MailSystem, domain: str, dns_zone):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    sender_domain = f"s{uuid.uuid4().hex[:10]}.test"
    dns_zone.add(
        f'{sender_domain}. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
        f'_dmarc.{sender_domain}. 60 IN TXT "v=DMARC1; p=reject"\n'
    )
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.sendmail(f"news@{sender_domain}", [bob], _message(f"news@{sender_domain}", bob, "spf ok"))
    raw = mail_system.maildir_files(domain, "bob")[0].read_bytes().decode()
    header = raw.split("\r\n\r\n")[0]
    assert f"spf=pass smtp.mailfrom={sender_domain}" in header or f"spf=pass smtp.mailfrom=news@{sender_domain}" in header
    assert "dmarc=pass" in header


def test_lifetime_exceeded_goes_dead_with_a_dsn_and_can_be_retried(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    remote = f"r{uuid.uuid4().hex[:10]}.test"
    ip = _next_ip()  # nothing listens there: every attempt is "connection refused"
    dns_zone.add(f"{remote}. 60 IN MX 10 mx.{remote}.\nmx.{remote}. 60 IN A {ip}\n")
    _submit(mail_system, alice, [f"late@{remote}"], _message(alice, f"late@{remote}", "too late"))
    row = wait_for(lambda: next((r for r in _queue_rows(mail_system, alice) if r["attempts"] >= 1), None),
                   what="the first attempt")
    assert row["status"] in ("deferred", "sending", "pending")
    mail_system.fetch("UPDATE outbound_queue SET expires_at = now() WHERE id = $1", row["id"])
    dead = wait_for(lambda: next((r for r in _queue_rows(mail_system, alice) if r["status"] == "dead"), None),
                    timeout=30, what="the dead letter")
    assert "delivery time expired" in dead["last_error"]
    dsn_rows = wait_for(lambda: mail_system.messages_of(alice), what="the DSN")
    assert len(dsn_rows) == 1
    raw = next(p for p in mail_system.maildir_files(domain, "alice") if "Sent" not in str(p)).read_bytes().decode()
    assert "Action: failed" in raw and "Status: 4.4.7" in raw and f"late@{remote}" in raw
    with SmtpSink(host=ip, port=mx_port) as sink:
        env = {"WHYMAIL_DB_DSN": mail_system.dsn, "PATH": "/usr/bin:/bin"}
        retried = subprocess.run([sys.executable, "-m", "whymail.cli.ctl", "queue", "retry", str(dead["id"])],
                                 capture_output=True, text=True, timeout=120, env=env)
        assert retried.returncode == 0, retried.stderr
        wait_for(lambda: sink.messages, timeout=30, what="delivery of the dead letter after the retry")
        assert [m.rcpt_tos for m in sink.messages] == [[f"late@{remote}"]]


def test_a_delayed_dsn_goes_out_once_when_delivery_takes_longer_than_delay_warning(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        sink.script("RCPT", "451 4.2.1 mailbox busy")
        _submit(mail_system, alice, [f"slow@{remote}"], _message(alice, f"slow@{remote}", "slow one"))
        row = wait_for(lambda: next((r for r in _queue_rows(mail_system, alice) if r["attempts"] >= 1), None),
                       what="the first attempt")
        assert mail_system.messages_of(alice) == []  # not yet older than queue.delay_warning (1 h)
        # The message has now been waiting for two hours.
        mail_system.fetch("UPDATE outbound_queue SET created_at = now() - interval '2 hours' WHERE id = $1",
                          row["id"])
        wait_for(lambda: mail_system.messages_of(alice), what="the delayed DSN")
        attempts = row["attempts"]
        wait_for(lambda: _queue_rows(mail_system, alice)[0]["attempts"] >= attempts + 3, timeout=30,
                 what="more attempts after the warning")
    current = _queue_rows(mail_system, alice)[0]
    assert current["status"] in ("deferred", "sending", "pending") and current["delay_warned_at"] is not None
    assert len(mail_system.messages_of(alice)) == 1, "the delay warning is sent once"
    raw = next(p for p in mail_system.maildir_files(domain, "alice") if "Sent" not in str(p)).read_bytes().decode()
    assert "Action: delayed" in raw and "Status: 4.2.1" in raw and "Will-Retry-Until:" in raw


def test_spf_dns_trouble_never_loses_mail(mail_system: MailSystem, domain: str, dns_zone):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    sender_domain = f"s{uuid.uuid4().hex[:10]}.test"
    dns_zone.set_servfail(sender_domain, f"_dmarc.{sender_domain}")
    try:
        with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
            client.sendmail(f"a@{sender_domain}", [bob], _message(f"a@{sender_domain}", bob, "dns trouble"))
    finally:
        dns_zone.set_servfail()
    raw = mail_system.maildir_files(domain, "bob")[0].read_bytes().decode()
    header = raw.split("\r\n\r\n")[0]
    assert "spf=temperror" in header  # mailauth.on_temperror: accept (the default) delivers and marks it


def test_an_alias_forwarding_off_site_is_relayed_through_the_queue(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        mail_system.add_alias(f"team@{domain}", [bob, f"outside@{remote}"])
        with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
            refused = client.sendmail("news@elsewhere.test", [f"team@{domain}"],
                                      _message("news@elsewhere.test", f"team@{domain}", "forward me"))
        assert refused == {}
        wait_for(lambda: sink.messages, what="the forwarded copy")
        assert [m.rcpt_tos for m in sink.messages] == [[f"outside@{remote}"]]
        assert sink.messages[0].mail_from == "news@elsewhere.test"
        assert b"Subject: forward me" in sink.messages[0].data
    assert [r["subject"] for r in mail_system.messages_of(bob)] == ["forward me"]


def test_two_delivery_queues_share_the_work_without_sending_anything_twice(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    from actors.delivery_queue import DeliveryQueue

    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    cluster = mail_system.cluster
    second = DeliveryQueue.options(name=f"delivery-queue-extra-{uuid.uuid4().hex[:6]}", namespace=cluster.namespace,
                                   num_cpus=0, max_concurrency=1000).remote(
        "delivery-queue-extra", mail_system.runtime, cluster.shard_names, cluster.namespace)
    try:
        ray.get(second.ready.remote())
        count = 80
        with remote_domain(dns_zone, mx_port, reply_delay=0.01) as (remote, sink):
            with smtplib.SMTP("127.0.0.1", mail_system.submission_port, timeout=30) as client:
                client.starttls(context=_tls())
                client.login(alice, TEST_PASSWORD)
                for i in range(count):
                    client.sendmail(alice, [f"m{i}@{remote}"], _message(alice, f"m{i}@{remote}", f"m {i}"))
            wait_for(lambda: len(sink.messages) >= count, timeout=60, what="every message")
            wait_for(lambda: all(r["status"] == "sent" for r in _queue_rows(mail_system, alice)), what="all sent")
            received = sorted(m.rcpt_tos[0] for m in sink.messages)
        assert received == sorted(f"m{i}@{remote}" for i in range(count))
        assert ray.get(second.stats.remote())["entries"] > 0, "the second queue never claimed anything"
    finally:
        ray.kill(second, no_restart=True)


def test_a_forward_only_alias_in_two_local_domains_reaches_the_remote_twice(
    mail_system: MailSystem, domain: str, dns_zone, mx_port
):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    mail_system.add_domain(other)
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    with remote_domain(dns_zone, mx_port) as (remote, sink):
        mail_system.add_alias(f"fwd@{domain}", [f"one@{remote}"])  # forwards only: no local user
        mail_system.add_alias(f"fwd@{other}", [f"two@{remote}"])
        _submit(mail_system, alice, [f"fwd@{domain}", f"fwd@{other}"],
                _message(alice, f"fwd@{domain}", "both forwards"))
        wait_for(lambda: len(sink.messages) >= 2, what="both forwarded copies")
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == [f"one@{remote}", f"two@{remote}"]
        with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("x@elsewhere.test")
            code, _ = client.rcpt(f"fwd@{domain}")
            assert code == 250  # port 25 takes it too: the queue forwards it


def test_two_from_fields_are_refused_under_dmarc(mail_system: MailSystem, domain: str, dns_zone):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    forged = f"s{uuid.uuid4().hex[:10]}.test"
    dns_zone.add(f'_dmarc.{forged}. 60 IN TXT "v=DMARC1; p=reject"\n')
    data = (f"From: ceo@{forged}\r\nFrom: x@evil.test\r\nTo: {bob}\r\nSubject: two authors\r\n\r\nhi\r\n").encode()
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("x@evil.test")
        client.rcpt(bob)
        code, text = client.data(data)
    assert code == 550 and b"5.7.1" in text
    assert mail_system.messages_of(bob) == []


def test_a_message_with_a_hundred_hops_is_a_loop(mail_system: MailSystem, domain: str):
    bob = f"bob@{domain}"
    mail_system.add_user(bob)
    hops = "".join(f"Received: from h{i}.test by h{i + 1}.test; Thu, 26 Nov 2026 06:00:00 +0000\r\n"
                   for i in range(100))
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("x@elsewhere.test")
        client.rcpt(bob)
        code, text = client.data((hops + f"From: x@elsewhere.test\r\nTo: {bob}\r\n\r\nloop\r\n").encode())
    assert code == 554 and b"5.4.6" in text
    assert mail_system.messages_of(bob) == []


def test_dkim_rotation_keeps_the_old_key_until_the_new_one_is_activated(mail_system: MailSystem, domain: str):
    env = {"WHYMAIL_DB_DSN": mail_system.dsn, "PATH": "/usr/bin:/bin"}

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "whymail.cli.ctl", "domain", "dkim", domain, *args],
                              capture_output=True, text=True, timeout=120, env=env)

    def active() -> list[str]:
        return [r["selector"] for r in mail_system.fetch(
            "SELECT k.selector FROM dkim_keys k JOIN domains d ON d.id = k.domain_id "
            "WHERE d.name = $1 AND k.is_active", domain)]

    first = ctl("--selector", "old")
    assert first.returncode == 0 and "signed with it" in first.stdout
    second = ctl("--selector", "new")
    assert second.returncode == 0 and "--activate new" in second.stdout
    assert active() == ["old"]
    switched = ctl("--activate", "new")
    assert switched.returncode == 0, switched.stderr
    assert active() == ["new"]
    missing = ctl("--activate", "nope")
    assert missing.returncode == 1 and "no DKIM key" in missing.stderr
    ed = ctl("--selector", "ed", "--algorithm", "ed25519", "--json")
    assert ed.returncode == 0 and '"active": true' in ed.stdout  # the first Ed25519 key signs beside RSA
    assert sorted(active()) == ["ed", "new"]
