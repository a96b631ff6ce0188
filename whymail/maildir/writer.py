"""Durable Maildir writes: tmp/ -> fsync -> rename into new/ -> fsync new/, a whole batch or nothing.

A batch may be written in parallel on a thread pool: fsync releases the GIL, and ~20 threads is where
throughput peaks on our 2-core machines (~9.6k files/s against ~2.3k/s one after another).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from whymail.maildir.names import check_file_name

SUBDIRS = ("cur", "new", "tmp")
FOLDER_MARKER = "maildirfolder"
# Dovecot and mutt put flags after this separator in cur/ (cr.yp.to/proto/maildir "info").
INFO_SEPARATOR = ":2,"


@dataclass(frozen=True, slots=True)
class MaildirFile:
    """One message body to be delivered as `folder/new/name`."""

    folder: Path
    name: str
    data: bytes

    @property
    def tmp_path(self) -> Path:
        return Path(self.folder) / "tmp" / self.name

    @property
    def new_path(self) -> Path:
        return Path(self.folder) / "new" / self.name


def ensure_folder(path: Path) -> None:
    """Create `cur/ new/ tmp/` (plus the Maildir++ `maildirfolder` marker for a `.Sub` folder); idempotent."""
    path = Path(path)
    is_subfolder = path.name.startswith(".")
    marker = path / FOLDER_MARKER
    for sub in SUBDIRS:
        _mkdir_durable(path / sub)
    if is_subfolder and not marker.exists():
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        _fsync_dir(path)


def _mkdir_durable(path: Path) -> None:
    """mkdir -p, then fsync the parent of each directory created, so a crash cannot lose a fsynced new/."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    if not missing:
        return
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        _fsync_dir(created.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_one(file: MaildirFile, fsync: bool) -> Path:
    """Write tmp/name, fsync it, rename over new/name; leaves no tmp file behind on failure.

    The tmp name gets a random suffix so that two overlapping attempts of one delivery (a retry
    while the first is still running) never write into the same tmp file.
    """
    tmp = file.tmp_path.with_name(f"{file.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(file.data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        # os.replace: a retried delivery with the same name overwrites, never duplicates.
        os.replace(tmp, file.new_path)
    except BaseException:
        remove_files([tmp])
        raise
    return file.new_path


def _check_batch(files: list[MaildirFile]) -> None:
    seen: set[tuple[Path, str]] = set()
    for file in files:
        check_file_name(file.name)
        key = (Path(file.folder), file.name)
        if key in seen:
            raise ValueError(f"{file.name} appears twice in one batch for {file.folder}")
        seen.add(key)


def _new_dirs(files: list[MaildirFile]) -> list[Path]:
    return list(dict.fromkeys(Path(f.folder) / "new" for f in files))


def _cleanup(files: list[MaildirFile], written: Iterable[Path]) -> None:
    remove_files([*(f.tmp_path for f in files), *written])


def write_files(
    files: list[MaildirFile],
    *,
    fsync: bool = True,
    executor: concurrent.futures.Executor | None = None,
) -> list[Path]:
    """Deliver a batch durably and return the `new/` paths; on any error remove the batch and re-raise.

    With `executor`, files are written in parallel on it; do not call this from one of its own workers
    (use `write_files_async` from an event loop instead).
    """
    _check_batch(files)
    written: list[Path] = []
    try:
        if executor is None:
            for file in files:
                written.append(_write_one(file, fsync))
        else:
            futures = [executor.submit(_write_one, file, fsync) for file in files]
            # Wait for every write, even after a failure, so cleanup sees all files this batch made.
            concurrent.futures.wait(futures)
            errors = [fut.exception() for fut in futures]
            written = [fut.result() for fut, err in zip(futures, errors, strict=True) if err is None]
            first_error = next((err for err in errors if err is not None), None)
            if first_error is not None:
                raise first_error
        if fsync:
            for new_dir in _new_dirs(files):
                _fsync_dir(new_dir)
    except BaseException:
        _cleanup(files, written)
        raise
    return [f.new_path for f in files]


_CHUNKS = 4  # jobs per batch: enough to overlap fsyncs, few enough to keep thread switching cheap


def _write_chunk(files: list[MaildirFile], fsync: bool) -> tuple[list[Path], BaseException | None]:
    """Write `files` one after another; returns what was written and the error that stopped it."""
    written: list[Path] = []
    for file in files:
        try:
            written.append(_write_one(file, fsync))
        except BaseException as exc:  # reported to the caller, which cleans up the whole batch
            return written, exc
    return written, None


def _fsync_dirs(dirs: list[Path]) -> None:
    for directory in dirs:
        _fsync_dir(directory)


async def write_files_async(
    files: list[MaildirFile],
    *,
    fsync: bool = True,
    executor: concurrent.futures.Executor | None = None,
) -> list[Path]:
    """`write_files` without blocking the event loop: files in a few parallel jobs, then dir fsyncs.

    Every blocking step is a separate job on the pool (no job waits for another), so many concurrent
    batches can share one small pool without deadlocking it.
    """
    _check_batch(files)
    loop = asyncio.get_running_loop()
    chunks = [files[i::_CHUNKS] for i in range(min(_CHUNKS, len(files)))]
    futures = [loop.run_in_executor(executor, _write_chunk, chunk, fsync) for chunk in chunks]
    try:
        if futures:
            # asyncio.wait, unlike gather, never cancels the writes if this task is cancelled.
            await asyncio.wait(futures)
        for fut in futures:
            error = fut.exception() or fut.result()[1]
            if error is not None:
                raise error
        if fsync:
            await loop.run_in_executor(executor, _fsync_dirs, _new_dirs(files))
    except BaseException:
        # On cancellation the worker threads keep running: let them finish so cleanup sees their files.
        pending = [fut for fut in futures if not fut.done()]
        if pending:
            await asyncio.shield(asyncio.wait(pending))
        written = [
            path
            for fut in futures
            if not fut.cancelled() and fut.exception() is None
            for path in fut.result()[0]
        ]
        await asyncio.shield(loop.run_in_executor(executor, _cleanup, files, written))
        raise
    return [f.new_path for f in files]


def remove_files(paths: Iterable[Path]) -> None:
    """Best-effort unlink of each path; missing files and other OS errors are ignored."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def read_message(path: Path) -> bytes:
    """The bytes of one message file."""
    return Path(path).read_bytes()


def find_message(folder: Path, name: str) -> Path | None:
    """Where message `name` of `folder` is now: `new/name`, `cur/name` or `cur/name:2,FLAGS`; else None."""
    check_file_name(name)
    folder = Path(folder)
    for candidate in (folder / "new" / name, folder / "cur" / name):
        if candidate.is_file():
            return candidate
    prefix = name + INFO_SEPARATOR
    try:
        with os.scandir(folder / "cur") as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    return Path(entry.path)
    except FileNotFoundError:
        return None
    return None
