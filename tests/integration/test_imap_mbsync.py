"""A full Maildir sync with mbsync (isync) over IMAPS: download, local flag/delete upload, new mail."""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

from imapclient import IMAPClient

from tests.integration.conftest import TEST_PASSWORD, MailSystem

MBSYNC = shutil.which("mbsync") or "/usr/bin/mbsync"
FOLDERS = {"INBOX": 40, "Archive": 40, "Projects/2026": 40, "Café": 40, "Receipts": 40}

# No skip when mbsync is missing: `make test` installs isync (scripts/install-system-deps.sh), and a
# missing client must fail the suite rather than hide an untested feature.


def _message(subject: str, attach: bool) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "sync@example.net"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.encode('ascii', 'replace').decode().replace(' ', '.').replace('/', '-').replace('?', 'e')}@example.org>"
    msg.set_content(f"body of {subject}\n")
    if attach:
        msg.add_attachment(bytes(range(256)) * 8, maintype="application", subtype="octet-stream", filename="blob.bin")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def _local_dir(root: Path, folder: str) -> Path | None:
    """The Maildir mbsync made for `folder` (UTF-8 or modified-UTF-7 name, depending on isync)."""
    for candidate in (folder, folder.replace("é", "&AOk-")):
        path = root / candidate
        if (path / "cur").is_dir():
            return path
    return None


def _local_files(root: Path, folder: str) -> list[Path]:
    path = _local_dir(root, folder)
    assert path is not None, f"no local Maildir for {folder}: {sorted(p.name for p in root.iterdir())}"
    return sorted(p for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file())


def _subject(path: Path) -> str:
    return str(email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["Subject"])


def _run_mbsync(rc: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([MBSYNC, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"mbsync failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def _with_info_flags(path: Path, add: str) -> Path:
    """Rename a Maildir file into cur/ with extra info flags (the way a mail client marks it)."""
    name = path.name
    base, _, info = name.partition(":2,")
    flags = "".join(sorted(set(info) | set(add)))
    target = path.parent.parent / "cur" / f"{base}:2,{flags}"
    path.rename(target)
    return target


def test_mbsync_full_sync_round_trip(mail_system: MailSystem, domain: str, tmp_path: Path) -> None:
    user = f"sync@{domain}"
    mail_system.add_user(user)

    # INBOX over SMTP, the other folders over APPEND; every fifth message has an attachment.
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as smtp:
        for i in range(FOLDERS["INBOX"]):
            smtp.sendmail("sender@example.org", [user], _message(f"INBOX {i}", attach=i % 5 == 0))
    imap = IMAPClient("127.0.0.1", port=mail_system.cluster.imap_port, ssl=False, timeout=30)
    imap.login(user, TEST_PASSWORD)
    try:
        for folder, count in FOLDERS.items():
            if folder == "INBOX":
                continue
            if folder not in ("Archive",):
                imap.create_folder(folder)
            for i in range(count):
                imap.append(folder, _message(f"{folder} {i}", attach=i % 5 == 0))
        for folder, count in FOLDERS.items():
            assert imap.folder_status(folder, ["MESSAGES"])[b"MESSAGES"] == count, folder
    finally:
        imap.logout()

    cert = Path(mail_system.runtime.state_dir) / "tls" / "cert.pem"
    assert cert.is_file()
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount test
Host 127.0.0.1
Port {mail_system.cluster.imaps_port}
User {user}
Pass "{TEST_PASSWORD}"
SSLType IMAPS
CertificateFile {cert}
PipelineDepth 10

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )

    # 1. first sync downloads everything
    _run_mbsync(rc)
    for folder, count in FOLDERS.items():
        files = _local_files(local, folder)
        assert len(files) == count, (folder, len(files))
        assert sorted(_subject(f) for f in files) == sorted(f"{folder} {i}" for i in range(count))
    with_attachment = next(f for f in _local_files(local, "Archive") if _subject(f) == "Archive 0")
    parsed = email.message_from_bytes(with_attachment.read_bytes())
    assert parsed.is_multipart()
    assert [p.get_filename() for p in parsed.walk() if p.get_filename()] == ["blob.bin"]
    assert parsed.get_payload()[1].get_payload(decode=True) == bytes(range(256)) * 8

    # 2. local changes: flag two INBOX messages, delete one, then sync back
    inbox = {_subject(f): f for f in _local_files(local, "INBOX")}
    _with_info_flags(inbox["INBOX 1"], "S")
    _with_info_flags(inbox["INBOX 2"], "FS")
    inbox["INBOX 3"].unlink()
    receipts = {_subject(f): f for f in _local_files(local, "Receipts")}
    _with_info_flags(receipts["Receipts 7"], "T")
    _run_mbsync(rc)

    rows = {r["subject"]: r for r in mail_system.messages_of(user, "INBOX")}
    assert "INBOX 3" not in rows and len(rows) == FOLDERS["INBOX"] - 1
    assert "\\Seen" in rows["INBOX 1"]["flags"] and "\\Flagged" not in rows["INBOX 1"]["flags"]
    assert {"\\Seen", "\\Flagged"} <= set(rows["INBOX 2"]["flags"])
    assert "\\Seen" not in rows["INBOX 4"]["flags"]
    receipt_rows = {r["subject"] for r in mail_system.messages_of(user, "Receipts")}
    assert "Receipts 7" not in receipt_rows and len(receipt_rows) == FOLDERS["Receipts"] - 1

    # 3. new mail over SMTP arrives locally on the next sync
    with smtplib.SMTP("127.0.0.1", mail_system.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", [user], _message("fresh after sync", attach=False))
    _run_mbsync(rc)
    subjects = [_subject(f) for f in _local_files(local, "INBOX")]
    assert "fresh after sync" in subjects and len(subjects) == FOLDERS["INBOX"]
    # a server-side flag change comes down too
    imap = IMAPClient("127.0.0.1", port=mail_system.cluster.imap_port, ssl=False, timeout=30)
    imap.login(user, TEST_PASSWORD)
    try:
        imap.select_folder("INBOX")
        uid = imap.search(["SUBJECT", "INBOX 4"])
        assert len(uid) == 1
        imap.add_flags(uid, [b"\\Flagged"])
    finally:
        imap.logout()
    _run_mbsync(rc)
    flagged = next(f for f in _local_files(local, "INBOX") if _subject(f) == "INBOX 4")
    assert "F" in flagged.name.partition(":2,")[2]
