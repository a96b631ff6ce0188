"""Regular expressions with a time limit: each search runs in a worker process that is killed on overrun.

Rules carry patterns written by users; a backtracking pattern can take exponential time, and `re`
cannot be interrupted inside the process that runs it. So searches go to one long-lived worker process
(`regex_worker.py`) over a pipe (~0.1 ms a search); when one takes longer than the limit the worker is
killed, the search fails with `RegexTimeout`, and the next search starts a fresh worker.
"""

from __future__ import annotations

import atexit
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

MAX_TEXT_CHARS = 65_536  # a rule's regex sees at most this much of a field (bodies are the long ones)
DEFAULT_TIMEOUT = 0.5
STARTUP_TIMEOUT = 20.0  # starting the interpreter is slow on a loaded machine; that is not the pattern's fault
_WORKER = Path(__file__).with_name("regex_worker.py")


class RegexFailure(Exception):
    """A search could not give an answer (the pattern is invalid, or the worker failed)."""


class RegexTimeout(RegexFailure):
    """The search took longer than the time limit and was stopped."""


class RegexGuard:
    """Runs `search` in a worker process with a time limit; safe to share between threads."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""

    def search(self, pattern: str, text: str, *, ignore_case: bool = False) -> bool:
        """Whether `pattern` is found in `text` (cut to MAX_TEXT_CHARS); RegexTimeout past the limit."""
        request = orjson.dumps([pattern, ignore_case, text[:MAX_TEXT_CHARS]]) + b"\n"
        with self._lock:
            try:
                proc = self._worker()
                assert proc.stdin is not None
                proc.stdin.write(request)
                proc.stdin.flush()
                reply = self._read_line(proc, time.monotonic() + self.timeout)
            except OSError as exc:  # the worker died under us
                self._stop()
                raise RegexFailure(f"the regex worker failed: {exc}") from None
            if reply is None:
                self._stop()
                raise RegexTimeout(f"the regular expression took longer than {self.timeout:g} s")
        if reply.startswith(b"!"):
            raise RegexFailure(reply[1:].decode("utf-8", "replace"))
        return reply == b"1"

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, bufsize=0, close_fds=True,
            )
            self._pending = b""
            if self._read_line(self._proc, time.monotonic() + STARTUP_TIMEOUT) != b"ready":
                self._stop()
                raise RegexFailure("the regex worker did not start")
        return self._proc

    def _read_line(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """The worker's next reply line, or None when the deadline passes first."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise OSError("the worker exited")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        self._pending = b""
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


_default: RegexGuard | None = None
_default_lock = threading.Lock()


def default_guard() -> RegexGuard:
    """The process-wide guard (one worker process per process that evaluates rules)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RegexGuard()
            atexit.register(_default.close)
        return _default
