"""IMAP end to end with the `imapclient` library: folders, APPEND, FETCH, SEARCH, STORE, COPY/MOVE, EXPUNGE."""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from tests.integration.conftest import TEST_PASSWORD, MailSystem


def _message(subject: str, body: str = "hello imapclient\r\n", sender: str = "alice@example.org") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: bob@example.net\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
        f"\r\n{body}"
    ).encode()


def _deliver(system: MailSystem, rcpt: str, subject: str, body: str = "hello smtp\r\n") -> None:
    with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", [rcpt], f"From: sender@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{body}")


@pytest.fixture
def client_for(mail_system: MailSystem, domain: str) -> Iterator:
    clients: list[IMAPClient] = []

    def make(local: str) -> tuple[IMAPClient, str]:
        user = f"{local}@{domain}"
        mail_system.add_user(user)
        client = IMAPClient("127.0.0.1", port=mail_system.cluster.imap_port, ssl=False, timeout=30)
        client.login(user, TEST_PASSWORD)
        clients.append(client)
        return client, user

    yield make
    for client in clients:
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


def test_capabilities_namespace_and_id(client_for) -> None:
    client, _ = client_for("caps")
    caps = client.capabilities()
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"SPECIAL-USE", b"UNSELECT", b"NAMESPACE", b"ID"):
        assert cap in caps, cap
    ns = client.namespace()
    assert ns.personal and ns.personal[0][1] == "/"
    assert ns.other is None and ns.shared is None
    server_id = client.id_({"name": "pytest"})
    fields = server_id[0] if len(server_id) == 1 else server_id
    pairs = dict(zip(fields[0::2], fields[1::2], strict=True))
    assert pairs[b"name"] == b"WhyMail"


def test_folders_special_use_create_rename_delete_subscribe(client_for) -> None:
    client, _ = client_for("folders")
    folders = {name: flags for flags, _, name in client.list_folders()}
    assert "INBOX" in folders
    assert b"\\Sent" in folders["Sent"] and b"\\Trash" in folders["Trash"] and b"\\Drafts" in folders["Drafts"]
    assert b"\\Junk" in folders["Junk"] and b"\\Archive" in folders["Archive"]

    client.create_folder("Projects")
    client.create_folder("Projects/2026")
    client.create_folder("Café")
    names = [name for _, _, name in client.list_folders()]
    assert "Projects/2026" in names and "Café" in names
    assert [name for _, _, name in client.list_folders("", "Projects/%")] == ["Projects/2026"]
    with pytest.raises(IMAPClientError):
        client.create_folder("Projects")

    client.rename_folder("Café", "Café Noir")
    names = [name for _, _, name in client.list_folders()]
    assert "Café Noir" in names and "Café" not in names
    client.rename_folder("Projects", "Work")
    names = [name for _, _, name in client.list_folders()]
    assert "Work/2026" in names and "Projects/2026" not in names

    client.subscribe_folder("Café Noir")
    client.subscribe_folder("Work/2026")
    subscribed = [name for _, _, name in client.list_sub_folders()]
    assert "Café Noir" in subscribed and "Work/2026" in subscribed
    client.unsubscribe_folder("Café Noir")
    subscribed = [name for _, _, name in client.list_sub_folders()]
    assert "Café Noir" not in subscribed and "Work/2026" in subscribed

    client.delete_folder("Work/2026")
    client.delete_folder("Café Noir")
    names = [name for _, _, name in client.list_folders()]
    assert "Work/2026" not in names and "Café Noir" not in names
    with pytest.raises(IMAPClientError):
        client.delete_folder("Café Noir")
    with pytest.raises(IMAPClientError):
        client.delete_folder("INBOX")


def test_select_append_and_fetch(client_for) -> None:
    client, _ = client_for("fetcher")
    info = client.select_folder("INBOX")
    assert info[b"EXISTS"] == 0
    uidvalidity, uidnext = info[b"UIDVALIDITY"], info[b"UIDNEXT"]
    assert uidvalidity > 0 and uidnext >= 1
    assert info[b"HIGHESTMODSEQ"] >= 1

    when = dt.datetime(2026, 1, 15, 12, 30, 0, tzinfo=dt.UTC)
    result = client.append("INBOX", _message("appended one"), flags=[b"\\Flagged", b"$Label1"], msg_time=when)
    assert b"APPENDUID" in result
    code = result.split(b"[", 1)[1].split(b"]", 1)[0].split()
    assert int(code[1]) == uidvalidity
    uid = int(code[2])
    assert uid >= uidnext

    fetched = client.fetch([uid], ["ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]", "RFC822.SIZE", "INTERNALDATE", "FLAGS", "MODSEQ"])
    data = fetched[uid]
    raw = _message("appended one")
    assert data[b"BODY[]"] == raw
    assert data[b"RFC822.SIZE"] == len(raw)
    assert data[b"ENVELOPE"].subject == b"appended one"
    assert data[b"ENVELOPE"].from_[0].mailbox == b"alice" and data[b"ENVELOPE"].from_[0].host == b"example.org"
    assert data[b"BODYSTRUCTURE"][0].lower() == b"text" and data[b"BODYSTRUCTURE"][1].lower() == b"plain"
    internal = data[b"INTERNALDATE"]
    if internal.tzinfo is None:
        internal = internal.astimezone().astimezone(dt.UTC)
    assert internal.astimezone(dt.UTC) == when
    assert set(data[b"FLAGS"]) == {b"\\Flagged", b"$Label1"}
    assert data[b"MODSEQ"][0] >= 1
    before = data[b"MODSEQ"][0]
    client.add_flags([uid], [b"\\Seen"])
    after = client.fetch([uid], ["MODSEQ"])[uid][b"MODSEQ"][0]
    assert after > before
    assert client.select_folder("INBOX")[b"HIGHESTMODSEQ"] >= after
    client.remove_flags([uid], [b"\\Seen"])

    status = client.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UNSEEN"])
    assert status[b"MESSAGES"] == 1 and status[b"UNSEEN"] == 1 and status[b"UIDNEXT"] == uid + 1


def test_search_criteria(client_for, mail_system: MailSystem) -> None:
    client, user = client_for("searcher")
    _deliver(mail_system, user, "delivered over smtp", "the quick brown fox\r\n")
    client.append("INBOX", _message("from carol", sender="carol@example.com"), flags=[b"\\Seen"],
                  msg_time=dt.datetime(2020, 5, 1, tzinfo=dt.UTC))
    client.append("INBOX", _message("big one", body="x" * 5000 + "\r\n"),
                  msg_time=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    client.select_folder("INBOX")
    uids = client.search("ALL")
    assert len(uids) == 3
    first, second, third = sorted(uids)
    assert sorted(client.search("UNSEEN")) == [first, third]
    assert client.search(["FROM", "carol@example.com"]) == [second]
    assert client.search(["SUBJECT", "big one"]) == [third]
    assert client.search(["TEXT", "brown fox"]) == [first]
    assert sorted(client.search(["SINCE", dt.date(2025, 1, 1)])) == [first, third]
    assert client.search(["LARGER", 4000]) == [third]
    assert sorted(client.search(["UID", f"{second}:*"])) == [second, third]
    assert sorted(client.search(["OR", "FROM", "carol", "SUBJECT", "big"])) == [second, third]
    assert client.search(["NOT", "UID", f"{second}:{third}"]) == [first]


def test_flags_copy_move_expunge(client_for) -> None:
    client, _ = client_for("mover")
    for i in range(4):
        client.append("INBOX", _message(f"msg {i}"))
    client.select_folder("INBOX")
    u1, u2, u3, u4 = sorted(client.search("ALL"))

    assert set(client.add_flags([u1], [b"\\Seen", b"Work"])[u1]) == {b"\\Seen", b"Work"}
    assert set(client.remove_flags([u1], [b"Work"])[u1]) == {b"\\Seen"}
    assert set(client.set_flags([u2], [b"\\Answered"])[u2]) == {b"\\Answered"}
    assert client.get_flags([u1, u2]) == {u1: (b"\\Seen",), u2: (b"\\Answered",)}

    client._imap.untagged_responses.pop("COPYUID", None)
    client.copy([u1, u2], "Archive")
    # imapclient drops the tagged text of UID COPY; imaplib keeps its response code
    copyuid = client._imap.untagged_responses.pop("COPYUID")[0].split()
    assert copyuid[1] == f"{u1}:{u2}".encode() or copyuid[1] == f"{u1},{u2}".encode()
    assert len(copyuid[2].replace(b":", b",").split(b",")) == 2
    archive = client.folder_status("Archive", ["MESSAGES"])
    assert archive[b"MESSAGES"] == 2

    client.move([u3], "Trash")
    assert sorted(client.search("ALL")) == [u1, u2, u4]
    assert client.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] == 1

    client.add_flags([u1, u2], [b"\\Deleted"])
    client.uid_expunge([u1])
    assert sorted(client.search("ALL")) == [u2, u4]
    client.expunge()
    assert client.search("ALL") == [u4]

    client.select_folder("Archive")
    archived = client.fetch(client.search("ALL"), ["FLAGS", "ENVELOPE"])
    by_subject = {d[b"ENVELOPE"].subject: set(d[b"FLAGS"]) for d in archived.values()}
    assert by_subject == {b"msg 0": {b"\\Seen"}, b"msg 1": {b"\\Answered"}}
    client.unselect_folder()
    with pytest.raises(IMAPClientError):
        client.search("ALL")


def test_mailbox_names_escaping_the_tree_are_refused(client_for) -> None:
    client, _ = client_for("escaper")
    other, _ = client_for("victim")
    other.create_folder("Secret")
    other.append("Secret", _message("victim data"))
    for bad in ("../victim/Secret", "Foo/../../Bar", "/etc", "..", "a/./b"):
        with pytest.raises(IMAPClientError) as err:
            client.create_folder(bad)
        assert "NO" in str(err.value) or "BAD" in str(err.value) or "create" in str(err.value).lower()
        with pytest.raises(IMAPClientError):
            client.select_folder(bad)
        with pytest.raises(IMAPClientError):
            client.append(bad, _message("sneaky"))
    # the session is still usable and nothing of the other user leaked
    names = [name for _, _, name in client.list_folders()]
    assert "Secret" not in names and not any(".." in n for n in names)
    assert client.noop()[0].startswith(b"NOOP")
    assert other.folder_status("Secret", ["MESSAGES"])[b"MESSAGES"] == 1


def test_two_megabyte_append_literal(client_for) -> None:
    client, _ = client_for("bigappend")
    line = "0123456789abcdef" * 4 + "\r\n"  # 66 bytes
    body = line * (2 * 1024 * 1024 // len(line) + 1)
    raw = _message("two megabytes", body=body)
    assert len(raw) > 2 * 1024 * 1024
    result = client.append("INBOX", raw)
    assert b"APPENDUID" in result
    uid = int(result.split(b"]", 1)[0].split()[-1])
    client.select_folder("INBOX", readonly=True)
    data = client.fetch([uid], ["RFC822.SIZE", "BODY.PEEK[]"])[uid]
    assert data[b"RFC822.SIZE"] == len(raw)
    assert data[b"BODY[]"] == raw


def test_close_on_the_virtual_starred_mailbox_succeeds(client_for) -> None:
    client, _ = client_for("starred")
    folders = {name: flags for flags, _, name in client.list_folders()}
    assert b"\\Flagged" in folders["Starred"]
    assert client.select_folder("Starred")[b"EXISTS"] == 0
    assert client.close_folder().startswith(b"CLOSE")  # mbsync CLOSEs every mailbox it synced
    with pytest.raises(IMAPClientError):
        client.search("ALL")  # CLOSE left the selected state
    assert client.select_folder("INBOX")[b"EXISTS"] == 0
