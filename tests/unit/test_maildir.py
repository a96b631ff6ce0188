"""Maildir++ naming and durable batch writes (whymail.maildir)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail import maildir
from whymail.maildir import (
    MaildirFile,
    MaildirNameError,
    dirname_to_mailbox,
    ensure_folder,
    find_message,
    folder_dir,
    mailbox_to_dirname,
    read_message,
    remove_files,
    unique_name,
    write_files,
    write_files_async,
)
from whymail.maildir import writer as maildir_writer

ROOT = Path("/srv/whymail-test-root/maildir")  # never touched: folder_dir only computes paths


@pytest.fixture(scope="module")
def executor():
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        yield pool


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = folder_dir(tmp_path, "example.com", "alice", "INBOX")
    ensure_folder(path)
    return path


# --- folder_dir ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mailbox", ["INBOX", "inbox", "InBoX"])
def test_inbox_in_any_case_is_the_user_directory(mailbox: str) -> None:
    assert folder_dir(ROOT, "example.com", "alice", mailbox) == ROOT / "example.com" / "alice"


@pytest.mark.parametrize(
    ("mailbox", "dirname"),
    [
        ("Sent", ".Sent"),
        ("Archive/2024", ".Archive.2024"),
        ("a.b", ".a%2Eb"),
        ("100%", ".100%25"),
        ("Projects/v1.2/notes", ".Projects.v1%2E2.notes"),
        ("inbox/Sub", ".INBOX.Sub"),
        ("Entwürfe", ".Entwürfe"),
        ("with space", ".with space"),
    ],
)
def test_mailbox_maps_to_maildirpp_folder(mailbox: str, dirname: str) -> None:
    assert folder_dir(ROOT, "example.com", "alice", mailbox) == ROOT / "example.com" / "alice" / dirname


def test_domain_is_lowercased_local_part_kept() -> None:
    assert folder_dir(ROOT, "Example.COM", "Alice", "INBOX") == ROOT / "example.com" / "Alice"


@pytest.mark.parametrize(
    ("domain", "local_part", "mailbox"),
    [
        ("", "alice", "INBOX"),
        ("..", "alice", "INBOX"),
        (".hidden", "alice", "INBOX"),
        ("a/b", "alice", "INBOX"),
        ("exa\0mple.com", "alice", "INBOX"),
        ("x" * 254, "alice", "INBOX"),
        ("example.com", "", "INBOX"),
        ("example.com", "..", "INBOX"),
        ("example.com", ".alice", "INBOX"),
        ("example.com", "al/ice", "INBOX"),
        ("example.com", "a\nb", "INBOX"),
        ("example.com", "a" * 65, "INBOX"),
        ("example.com", "alice", ""),
        ("example.com", "alice", "/Sent"),
        ("example.com", "alice", "Sent/"),
        ("example.com", "alice", "a//b"),
        ("example.com", "alice", ".."),
        ("example.com", "alice", "a/../b"),
        ("example.com", "alice", "a/./b"),
        ("example.com", "alice", ".Sent"),
        ("example.com", "alice", "a/.b"),
        ("example.com", "alice", "a\0b"),
        ("example.com", "alice", "a\rb"),
        ("example.com", "alice", "a\nb"),
        ("example.com", "alice", "x" * 256),
        ("example.com", "alice", "€" * 100),  # 300 bytes on disk: over the filesystem's 255
        ("example.com", "alice", "\ud800"),
    ],
)
def test_unsafe_names_are_refused(domain: str, local_part: str, mailbox: str) -> None:
    with pytest.raises(MaildirNameError):
        folder_dir(ROOT, domain, local_part, mailbox)


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "example.com" / "alice").mkdir(parents=True)
    (root / "example.com" / "alice" / ".Evil").symlink_to(tmp_path)
    with pytest.raises(MaildirNameError, match="outside"):
        folder_dir(root, "example.com", "alice", "Evil")


_nasty = st.lists(st.sampled_from(list("./\\%\0\r\n aZé&-~") + ["..", "INBOX", "inbox/"]), max_size=20).map(
    "".join
)
_anything = st.one_of(_nasty, st.text(max_size=300))


@given(domain=_anything, local_part=_anything, mailbox=_anything)
def test_folder_dir_stays_inside_root_or_refuses(domain: str, local_part: str, mailbox: str) -> None:
    try:
        path = folder_dir(ROOT, domain, local_part, mailbox)
    except MaildirNameError:
        return
    user = ROOT / domain.lower() / local_part
    assert path.resolve().is_relative_to(user.resolve())
    assert path == user or (path.parent == user and path.name.startswith(".") and ".." not in path.parts)


_level = st.text(
    alphabet=st.characters(blacklist_characters="/\0\r\n", blacklist_categories=("Cs",)), min_size=1
).filter(lambda s: not s.startswith("."))
_mailbox = st.lists(_level, min_size=1, max_size=5).map("/".join).filter(lambda s: len(s) <= 255)


def _normalised(mailbox: str) -> str:
    first, sep, rest = mailbox.partition("/")
    return ("INBOX" if first.upper() == "INBOX" else first) + sep + rest


@given(_mailbox)
def test_mailbox_name_escape_round_trips(mailbox: str) -> None:
    try:
        dirname = mailbox_to_dirname(mailbox)
    except MaildirNameError as exc:
        assert "bytes on disk" in str(exc)  # the only refusal left for these names
        return
    assert dirname_to_mailbox(dirname) == _normalised(mailbox)
    if dirname:
        assert "/" not in dirname and dirname.count(".") == mailbox.count("/") + 1


@given(_mailbox, _mailbox)
def test_distinct_mailboxes_never_share_a_directory(a: str, b: str) -> None:
    try:
        da, db = mailbox_to_dirname(a), mailbox_to_dirname(b)
    except MaildirNameError:
        return
    assert (da == db) == (_normalised(a) == _normalised(b))


# --- file names ------------------------------------------------------------------------------------


def test_unique_name_is_deterministic_per_delivery_and_index() -> None:
    delivery = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    first = unique_name(delivery, 0, 1234, "mx1.example.com", ts=1_700_000_000)
    assert first == unique_name(delivery, 0, 1234, "mx1.example.com", ts=1_700_000_000)
    assert first == f"1700000000.W{delivery.hex}_0.mx1.example.com,S=1234"
    assert unique_name(delivery, 1, 1234, "mx1.example.com", ts=1_700_000_000) != first


def test_unique_name_escapes_hostname_like_the_maildir_spec() -> None:
    name = unique_name(uuid.uuid4(), 0, 1, "a/b:c,d\\e", ts=1)
    assert "a\\057b\\072c\\054d\\134e,S=1" in name
    assert "/" not in name and ":" not in name


def test_unique_name_takes_time_from_uuid7_or_uuid1() -> None:
    ms = 1_700_000_123_456
    v7 = uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62) | 12345)
    assert unique_name(v7, 0, 1, "h").startswith("1700000123.")
    v1 = uuid.uuid1()
    assert abs(int(unique_name(v1, 0, 1, "h").split(".")[0]) - time.time()) < 5
    with pytest.raises(ValueError):
        unique_name(uuid.uuid4(), 0, 1, "h")


# --- ensure_folder ---------------------------------------------------------------------------------


def test_ensure_folder_creates_standard_layout_idempotently(tmp_path: Path) -> None:
    inbox = folder_dir(tmp_path, "example.com", "alice", "INBOX")
    sub = folder_dir(tmp_path, "example.com", "alice", "Archive/2024")
    for _ in range(2):
        ensure_folder(inbox)
        ensure_folder(sub)
    for path in (inbox, sub):
        assert all((path / d).is_dir() for d in ("cur", "new", "tmp"))
    assert (sub / "maildirfolder").is_file()
    assert not (inbox / "maildirfolder").exists()


# --- write_files -----------------------------------------------------------------------------------


def _batch(folder: Path, count: int, prefix: str = "m") -> list[MaildirFile]:
    return [
        MaildirFile(folder, f"{prefix}{i}", f"Subject: {i}\r\n\r\nbody {i}\r\n".encode())
        for i in range(count)
    ]


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "maildirfolder")


@pytest.mark.parametrize("parallel", [False, True])
def test_write_files_delivers_into_new_and_leaves_tmp_empty(inbox: Path, executor, parallel: bool) -> None:
    files = _batch(inbox, 30)
    paths = write_files(files, executor=executor if parallel else None)
    assert paths == [inbox / "new" / f.name for f in files]
    assert [read_message(p) for p in paths] == [f.data for f in files]
    assert list((inbox / "tmp").iterdir()) == []


def test_write_files_fsyncs_every_file_and_each_new_dir_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = folder_dir(tmp_path, "example.com", "alice", "INBOX")
    b = folder_dir(tmp_path, "example.com", "bob", "Sent")
    ensure_folder(a)
    ensure_folder(b)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    write_files(_batch(a, 3) + _batch(b, 2))
    assert len(synced) == 5 + 2
    synced.clear()
    write_files(_batch(a, 3, prefix="x"), fsync=False)
    assert synced == []


def test_rewriting_the_same_name_is_idempotent(inbox: Path, executor) -> None:
    write_files([MaildirFile(inbox, "same", b"first")])
    write_files([MaildirFile(inbox, "same", b"second")], executor=executor)
    assert _all_files(inbox) == [inbox / "new" / "same"]
    assert read_message(inbox / "new" / "same") == b"second"


@pytest.mark.parametrize("parallel", [False, True])
def test_failure_mid_batch_leaves_no_file_of_the_batch(tmp_path: Path, executor, parallel: bool) -> None:
    good = folder_dir(tmp_path, "example.com", "alice", "INBOX")
    ensure_folder(good)
    broken = folder_dir(tmp_path, "example.com", "bob", "INBOX")
    (broken / "new").mkdir(parents=True)  # no tmp/
    write_files([MaildirFile(good, "earlier", b"kept")])
    files = _batch(good, 5) + [MaildirFile(broken, "lost", b"x")] + _batch(good, 5, prefix="late")
    with pytest.raises(FileNotFoundError):
        write_files(files, executor=executor if parallel else None)
    assert _all_files(tmp_path) == [good / "new" / "earlier"]


def test_failure_of_directory_fsync_removes_the_whole_batch(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync_dir(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(maildir_writer, "_fsync_dir", broken_fsync_dir)
    with pytest.raises(OSError, match="Input/output"):
        write_files(_batch(inbox, 4))
    assert _all_files(inbox) == []


def test_duplicate_name_in_one_batch_is_refused_before_writing(inbox: Path) -> None:
    with pytest.raises(ValueError, match="twice"):
        write_files(
            [MaildirFile(inbox, "a", b"1"), MaildirFile(inbox, "b", b"2"), MaildirFile(inbox, "a", b"3")]
        )
    assert _all_files(inbox) == []


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "nul\0"])
def test_unsafe_file_names_are_refused(inbox: Path, name: str) -> None:
    with pytest.raises(MaildirNameError):
        write_files([MaildirFile(inbox, name, b"x")])


async def test_write_files_async_writes_and_cleans_up_on_failure(tmp_path: Path, executor) -> None:
    good = folder_dir(tmp_path, "example.com", "alice", "INBOX")
    ensure_folder(good)
    files = _batch(good, 25)
    paths = await write_files_async(files, executor=executor)
    assert [read_message(p) for p in paths] == [f.data for f in files]

    broken = tmp_path / "example.com" / "nobody"
    with pytest.raises(FileNotFoundError):
        await write_files_async(
            _batch(good, 5, prefix="y") + [MaildirFile(broken, "z", b"")], executor=executor
        )
    assert _all_files(tmp_path) == sorted(paths)


async def test_cancelled_async_write_waits_for_threads_then_cleans_up(
    inbox: Path, executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)
    real_write_one = maildir_writer._write_one

    def slow_write_one(file: MaildirFile, fsync: bool) -> Path:
        path = real_write_one(file, fsync)
        started.release()
        release.wait(10)
        return path

    monkeypatch.setattr(maildir_writer, "_write_one", slow_write_one)
    task = asyncio.create_task(write_files_async(_batch(inbox, 3), executor=executor))
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: [started.acquire(timeout=10) for _ in range(3)]
    )
    task.cancel()
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _all_files(inbox) == []


def test_remove_files_ignores_missing(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"x")
    remove_files([present, tmp_path / "missing", tmp_path])
    assert not present.exists()


# --- find_message ----------------------------------------------------------------------------------


def test_find_message_looks_in_new_then_cur_with_flags(inbox: Path) -> None:
    write_files([MaildirFile(inbox, "m1", b"one"), MaildirFile(inbox, "m2", b"two")])
    assert find_message(inbox, "m1") == inbox / "new" / "m1"
    os.rename(inbox / "new" / "m2", inbox / "cur" / "m2:2,RS")
    assert find_message(inbox, "m2") == inbox / "cur" / "m2:2,RS"
    assert read_message(find_message(inbox, "m2")) == b"two"
    assert find_message(inbox, "m") is None
    assert find_message(inbox, "absent") is None
    assert find_message(inbox.parent / "nowhere", "m1") is None


def test_package_exports_the_public_api() -> None:
    for name in maildir.__all__:
        assert hasattr(maildir, name)
