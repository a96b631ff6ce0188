#!/usr/bin/env python
"""Summarise py-spy `--format raw` (collapsed stacks) files: where a process spends its active samples.

    .venv/bin/python bench/profile_summary.py bench/results/profile-<stamp>/gateway.txt [--top 20]

For each file it prints the functions with the most *self* samples (the leaf frame: where the CPU
actually is) and the most *inclusive* samples (the function is anywhere on the stack), as a share of
the active (non-idle) samples py-spy took. `smtp_delivery.py --profile` writes such files and calls
this on them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PREFIXES = ("site-packages/", "/work/main/", "lib/python3.11/")


def _short(path: str) -> str:
    for prefix in _PREFIXES:
        pos = path.find(prefix)
        if pos >= 0:
            return path[pos + len(prefix) :]
    return path


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({_short(match['file'])})"


def _line(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({_short(match['file'])}:{match['line'] or '?'})"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def analyse(path: Path) -> dict:
    stacks = load(path)
    total = sum(n for _, n in stacks)
    self_fn: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        self_fn[_function(frames[-1])] += n
        self_line[_line(frames[-1])] += n
        for fn in {_function(f) for f in frames}:
            incl[fn] += n
    return {"total": total, "self": self_fn, "self_line": self_line, "inclusive": incl}


def print_profile(label: str, path: Path, top: int = 15, rate: int | None = None) -> None:
    result = analyse(Path(path))
    total = result["total"] or 1
    extra = f" (~{result['total'] / rate:.1f} s on CPU)" if rate else ""
    print(f"\n=== {label}: {result['total']} active samples{extra} — {path}")
    print("  self (leaf frame):")
    for fn, n in result["self"].most_common(top):
        print(f"    {100.0 * n / total:5.1f}%  {fn}")
    print("  inclusive (anywhere on the stack):")
    for fn, n in result["inclusive"].most_common(top + 10):
        print(f"    {100.0 * n / total:5.1f}%  {fn}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--rate", type=int, default=None, help="py-spy sampling rate, to print CPU seconds")
    args = parser.parse_args(argv)
    for path in args.files:
        print_profile(path.stem, path, top=args.top, rate=args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
