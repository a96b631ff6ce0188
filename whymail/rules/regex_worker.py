"""The process that runs user-supplied regular expressions, so that a catastrophic one can be killed.

Python's `re` holds the GIL for a whole match and cannot be interrupted, so a pattern such as `(a+)+$`
on a long input would freeze any thread of the caller. This worker reads one JSON request per line on
stdin, `[pattern, ignore_case, text]`, and answers `1` (found), `0` (not found) or `!reason`. It
imports only the standard library and is started by file path (see `regex_guard`).
"""

import functools
import json
import re
import sys


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


def _answer(line: bytes) -> bytes:
    try:
        pattern, ignore_case, text = json.loads(line)
        return b"1\n" if _compiled(pattern, bool(ignore_case)).search(text) else b"0\n"
    except (ValueError, TypeError, re.error, RecursionError, OverflowError) as exc:
        reason = str(exc).replace("\n", " ")[:200]
        return b"!" + reason.encode("utf-8", "replace") + b"\n"


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"ready\n")  # the caller's time limit starts once this arrives, not at process start
    stdout.flush()
    for line in stdin:
        stdout.write(_answer(line))
        stdout.flush()


if __name__ == "__main__":
    main()
