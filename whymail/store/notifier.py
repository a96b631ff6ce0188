"""Wake IMAP waiters (IDLE) when a mailbox's HIGHESTMODSEQ moves: asyncio futures, no polling.

The writer calls `notify(mailbox_id, modseq)` after each commit; `wait(mailbox_id, above, timeout)`
returns True as soon as the mailbox is known to be past `above`. The latest modseq seen per mailbox
is remembered, so a change that lands between a caller's database read and its `wait` still wakes it.
All methods must run on the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ChangeNotifier:
    """Per mailbox id: the latest HIGHESTMODSEQ announced, and the futures waiting to pass a value."""

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        """`on_change(mailbox_id)` also hears every change (the shard turns it into live folder counts)."""
        self._on_change = on_change
        self._latest: dict[int, int] = {}
        self._waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}

    def latest(self, mailbox_id: int) -> int:
        """The highest modseq announced for the mailbox (0 when none was)."""
        return self._latest.get(mailbox_id, 0)

    def notify(self, mailbox_id: int, modseq: int) -> None:
        """Record that the mailbox reached `modseq` and wake every waiter it passes."""
        if modseq > self._latest.get(mailbox_id, 0):
            self._latest[mailbox_id] = modseq
        if self._on_change is not None:
            self._on_change(mailbox_id)
        waiters = self._waiters.get(mailbox_id)
        if not waiters:
            return
        still: list[tuple[int, asyncio.Future[None]]] = []
        for above, future in waiters:
            if future.done():
                continue
            if modseq > above:
                future.set_result(None)
            else:
                still.append((above, future))
        if still:
            self._waiters[mailbox_id] = still
        else:
            del self._waiters[mailbox_id]

    def forget(self, mailbox_id: int) -> None:
        """Drop what is remembered about a deleted mailbox, waking its waiters."""
        self._latest.pop(mailbox_id, None)
        for _above, future in self._waiters.pop(mailbox_id, []):
            if not future.done():
                future.set_result(None)

    async def wait(self, mailbox_id: int, above: int, timeout: float) -> bool:
        """True once the mailbox's modseq is known to exceed `above`; False after `timeout` seconds."""
        if self._latest.get(mailbox_id, 0) > above:
            return True
        if timeout <= 0:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (above, future)
        self._waiters.setdefault(mailbox_id, []).append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(mailbox_id)
            if waiters is not None and entry in waiters:
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[mailbox_id]
            if not future.done():
                future.cancel()
