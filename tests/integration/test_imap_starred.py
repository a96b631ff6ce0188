"""The virtual Starred mailbox end to end (imapclient over the real cluster): every \\Flagged message of
the user, in any folder; unflagging elsewhere expunges it from Starred; STORE inside Starred reaches the
real message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from tests.integration.conftest import TEST_PASSWORD, MailSystem


def _message(subject: str) -> bytes:
    return (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
        f"\r\nbody of {subject}\r\n"
    ).encode()


@pytest.fixture
def clients(mail_system: MailSystem, domain: str) -> Iterator[tuple[IMAPClient, IMAPClient]]:
    user = f"star@{domain}"
    mail_system.add_user(user)
    made = []
    for _ in range(2):
        client = IMAPClient("127.0.0.1", port=mail_system.cluster.imap_port, ssl=False, timeout=30)
        client.login(user, TEST_PASSWORD)
        made.append(client)
    yield made[0], made[1]
    for client in made:
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


def test_starred_shows_flagged_messages_of_every_folder(clients: tuple[IMAPClient, IMAPClient]) -> None:
    real, star = clients
    real.append("INBOX", _message("inbox one"))
    real.append("INBOX", _message("inbox two"), flags=[b"\\Flagged"])
    real.append("Archive", _message("archived"))
    real.select_folder("Archive")
    real.add_flags(real.search("ALL"), [b"\\Flagged"])

    selected = star.select_folder("Starred")
    assert selected[b"EXISTS"] == 2
    uids = star.search("ALL")
    assert len(uids) == 2
    fetched = star.fetch(uids, ["FLAGS", "ENVELOPE", "BODY.PEEK[]"])
    subjects = sorted(fetched[uid][b"ENVELOPE"].subject for uid in uids)
    assert subjects == [b"archived", b"inbox two"]
    assert all(b"\\Flagged" in fetched[uid][b"FLAGS"] for uid in uids)
    by_subject = {fetched[uid][b"ENVELOPE"].subject: uid for uid in uids}
    assert fetched[by_subject[b"archived"]][b"BODY[]"] == _message("archived")

    # Unflagged in its real folder: the Starred session sees it expunged at NOOP.
    real.remove_flags(real.search("ALL"), [b"\\Flagged"])
    _, responses = star.noop()
    assert any(kind == b"EXPUNGE" for _, kind in responses), responses
    assert star.search("ALL") == [by_subject[b"inbox two"]]

    # Unflagged from inside Starred: the real message loses \Flagged.
    star.remove_flags([by_subject[b"inbox two"]], [b"\\Flagged"])
    real.select_folder("INBOX")
    flags = real.get_flags(real.search("ALL"))
    assert all(b"\\Flagged" not in f for f in flags.values()) and len(flags) == 2
    star.noop()
    assert star.search("ALL") == []

    # Starred is read-only for everything but flags.
    with pytest.raises(Exception):  # noqa: B017, PT011 - APPEND refused with NO
        star.append("Starred", _message("refused"))
    assert real.select_folder("INBOX")[b"EXISTS"] == 2
