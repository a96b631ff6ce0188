"""Spool files of queued messages: `<maildir_root>/.spool/<2 hex>/new/<delivery id>`.

The spool lives under the shared `maildir_root` (a leading dot can never be a domain directory), so
every node of a cluster sees it. Files are written like Maildir deliveries (tmp → fsync → new → dir
fsync) before the queue rows that name them are committed; they are removed only by the queue's
cleanup, after every row naming them has been finished for `queue.cleanup_after` seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import uuid
from pathlib import Path

from whymail.maildir.writer import MaildirFile, ensure_folder, remove_files, write_files_async

SPOOL_DIR = ".spool"
_RELATIVE = re.compile(r"^\.spool/[0-9a-f]{2}/new/[0-9a-f]{32}$")


class Spool:
    def __init__(self, maildir_root: Path, *, fsync: bool = True) -> None:
        self.root = Path(maildir_root)
        self.fsync = fsync
        self._ready: set[str] = set()  # 2-hex folders known to exist

    def relative_path(self, delivery_id: uuid.UUID) -> str:
        hexid = delivery_id.hex
        return f"{SPOOL_DIR}/{hexid[:2]}/new/{hexid}"

    def path_of(self, relative: str) -> Path:
        """The absolute path of a `message_path` column value (validated: no traversal)."""
        if not _RELATIVE.match(relative):
            raise ValueError(f"not a spool path: {relative!r}")
        return self.root / relative

    async def write(
        self, delivery_id: uuid.UUID, data: bytes, executor: concurrent.futures.Executor | None = None
    ) -> str:
        """Write durably; returns the relative path to store in `outbound_queue.message_path`."""
        return (await self.write_many([(delivery_id, data)], executor))[0]

    async def write_many(
        self, items: list[tuple[uuid.UUID, bytes]], executor: concurrent.futures.Executor | None = None
    ) -> list[str]:
        """`write` for several messages at once: parallel writes, one fsync per directory."""
        files = []
        for delivery_id, data in items:
            hexid = delivery_id.hex
            folder = self.root / SPOOL_DIR / hexid[:2]
            if hexid[:2] not in self._ready:
                await asyncio.to_thread(ensure_folder, folder)  # fsyncs: never on the event loop
                self._ready.add(hexid[:2])
            files.append(MaildirFile(folder, hexid, data))
        await write_files_async(files, fsync=self.fsync, executor=executor)
        return [self.relative_path(delivery_id) for delivery_id, _ in items]

    def read(self, relative: str) -> bytes:
        return self.path_of(relative).read_bytes()

    def remove(self, relatives: list[str]) -> None:
        remove_files(self.path_of(r) for r in relatives)
