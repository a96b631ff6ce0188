"""Files uploaded through the API (attachments of drafts), kept under `<maildir_root>/.uploads/`.

The name on disk is random: a client's filename never becomes part of a path. The root is the
Maildir root because it is the one directory every node of a cluster shares; its Maildir++ children
are domain names, which never start with a dot.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

from sanic import HTTPResponse

UPLOAD_DIR = ".uploads"
_CHUNK = 256 * 1024
_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(name: str | None) -> str:
    """The last path component of a client's filename, without control characters, at most 255 chars."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("", base).strip()
    if base in ("", ".", ".."):
        return "attachment"
    return base[:255]


def clean_content_type(value: str | None) -> str:
    """The media type a client declared, without parameters; application/octet-stream when it is not one."""
    kind = (value or "").split(";", 1)[0].strip().lower()
    return kind if _TYPE.fullmatch(kind) else "application/octet-stream"


def _write_new(root: Path, data: bytes, fsync: bool) -> str:
    directory = root / UPLOAD_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    relative = f"{UPLOAD_DIR}/{secrets.token_hex(16)}"
    fd = os.open(root / relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return relative


async def store(root: Path, data: bytes, *, fsync: bool = True) -> str:
    """Write `data` to a new random file; returns its path relative to `root`."""
    return await asyncio.to_thread(_write_new, root, data, fsync)


def resolve(root: Path, relative: str) -> Path | None:
    """The absolute path of a stored upload, or None when `relative` points outside the upload directory."""
    base = (root / UPLOAD_DIR).resolve()
    path = (root / relative).resolve()
    return path if path.parent == base else None


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def remove(root: Path, relatives: list[str]) -> None:
    """Delete stored uploads (missing files are fine: a retried delete finds them gone)."""
    paths = [p for p in (resolve(root, r) for r in relatives) if p is not None]
    if paths:
        await asyncio.to_thread(_remove, paths)


async def read(root: Path, relative: str) -> bytes | None:
    path = resolve(root, relative)
    if path is None:
        return None
    try:
        return await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        return None


async def open_upload(root: Path, relative: str) -> tuple[BinaryIO, int] | None:
    """The open file and its size, or None when it is gone."""
    path = resolve(root, relative)
    if path is None:
        return None

    def opened() -> tuple[BinaryIO, int]:
        handle = open(path, "rb")  # noqa: SIM115  (closed by FileDownload once sent)
        return handle, os.fstat(handle.fileno()).st_size

    try:
        return await asyncio.to_thread(opened)
    except FileNotFoundError:
        return None


class FileDownload(HTTPResponse):
    """A response whose body is read from an open file in chunks while it is sent, never all in memory.

    Sanic sends a returned response with `send(end_stream=True)`; that call streams the file instead.
    """

    def __init__(self, handle: BinaryIO, size: int, *, content_type: str, headers: dict[str, str]) -> None:
        super().__init__(None, status=200, content_type=content_type,
                         headers={**headers, "Content-Length": str(size)})
        self._handle: BinaryIO | None = handle

    async def send(self, data=None, end_stream=None) -> None:
        handle, self._handle = self._handle, None
        if handle is None or data:
            await super().send(data, end_stream)
            return
        try:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                await super().send(chunk, False)
        finally:
            handle.close()
        await super().send(None, True)
