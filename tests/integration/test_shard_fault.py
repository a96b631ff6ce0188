"""Killing a MailboxShard under load: no message answered 250 is lost or stored twice."""

from __future__ import annotations

import smtplib
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray

from tests.integration.conftest import MailSystem
from whymail.sharding import rendezvous_owner

MESSAGES = 2000
CONNECTIONS = 10


def _send_all(port: int, jobs: list[tuple[str, str]], results: dict[str, int], after: threading.Event,
              kill_at: int, sent: Counter, lock: threading.Lock) -> None:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
    smtp.ehlo("load.example")
    try:
        for rcpt, subject in jobs:
            body = f"From: load@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n"
            try:
                smtp.sendmail("load@example.org", [rcpt], body)
                code = 250
            except smtplib.SMTPDataError as exc:
                code = exc.smtp_code
                smtp.rset()
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                smtp.rset()
            results[subject] = code
            with lock:
                sent["n"] += 1
                if sent["n"] == kill_at:
                    after.set()
    finally:
        smtp.quit()


@pytest.mark.slow
def test_killing_a_shard_mid_load_loses_and_duplicates_nothing(mail_system: MailSystem, domain: str) -> None:
    cluster = mail_system.cluster
    users = {}
    for i in range(12):
        email = f"load{i}@{domain}"
        users[email] = mail_system.add_user(email)
    victim_name = cluster.shard_names[0]
    victim = cluster.shards[0]
    on_victim = [e for e, uid in users.items() if rendezvous_owner(uid, cluster.shard_names) == victim_name]
    assert on_victim, "no test user is owned by the shard we kill"

    pid_before = ray.get(victim.pid.remote())
    emails = list(users)
    jobs = [(emails[i % len(emails)], f"load-{i:05d}") for i in range(MESSAGES)]
    per_conn = [jobs[i::CONNECTIONS] for i in range(CONNECTIONS)]
    results: dict[str, int] = {}
    kill_now = threading.Event()
    sent: Counter = Counter()
    lock = threading.Lock()
    with ThreadPoolExecutor(CONNECTIONS + 1) as pool:
        futures = [
            pool.submit(_send_all, mail_system.smtp_port, chunk, results, kill_now, MESSAGES // 4, sent, lock)
            for chunk in per_conn
        ]
        while not kill_now.wait(0.5):
            failed = [f.exception() for f in futures if f.done() and f.exception()]
            assert not failed, f"a client failed before the kill: {failed[0]!r}"
        ray.kill(victim, no_restart=False)
        killed_at = sent["n"]
        for future in futures:
            future.result(timeout=300)

    assert len(results) == MESSAGES
    codes = Counter(results.values())
    assert set(codes) <= {250, 421, 451, 452}, codes  # only success or "try again later"
    assert codes[250] >= MESSAGES // 2, codes

    rows = mail_system.fetch(
        """SELECT m.subject, m.maildir_path, count(*) OVER (PARTITION BY m.subject) AS copies
             FROM messages m JOIN users u ON u.id = m.user_id WHERE u.email LIKE $1""",
        f"%@{domain}",
    )
    stored = {r["subject"]: r for r in rows}
    accepted = [s for s, code in results.items() if code == 250]
    for subject in accepted:
        assert subject in stored, f"{subject} got 250 but is not stored"
        assert stored[subject]["copies"] == 1, f"{subject} stored {stored[subject]['copies']} times"
        assert (mail_system.maildir_root / stored[subject]["maildir_path"]).is_file()

    # Nothing half-written: every row has its file and every file in the domain has its row.
    on_disk = {
        str(p.relative_to(mail_system.maildir_root))
        for p in (mail_system.maildir_root / domain).rglob("*")
        if p.is_file() and p.parent.name == "new"
    }
    assert on_disk == {r["maildir_path"] for r in rows}
    # Nothing stored for a message that was not answered 250.
    refused = {s for s, code in results.items() if code != 250}
    assert not refused & set(stored), "a message that got a 4xx was stored anyway"

    # Delivery resumed by itself: mail for the killed shard's users was accepted after the kill.
    victim_subjects = {s for (rcpt, s) in jobs if rcpt in on_victim}
    late_ok = [s for s in victim_subjects if int(s.split("-")[1]) > killed_at + 2 * CONNECTIONS and results[s] == 250]
    assert late_ok, "no message for the killed shard's users was accepted after the kill"
    assert ray.get(victim.ready.remote(), timeout=30) == victim_name
    assert ray.get(victim.pid.remote()) != pid_before, "the shard was not restarted"
    print(f"fault test: {dict(codes)} (killed after {killed_at} messages)")
