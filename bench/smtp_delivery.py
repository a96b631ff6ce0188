#!/usr/bin/env python
"""SMTP delivery benchmark: many pipelined SMTP sessions -> SmtpGateway -> MailboxShards -> Maildir + PostgreSQL.

Run as `make bench` (or `.venv/bin/python bench/smtp_delivery.py --help`). It builds a complete,
throw-away system in-process, exactly as `tests/integration/conftest.py` does:

1. a fresh PostgreSQL database `whymail_bench_<random>` on 127.0.0.1:5432 (user postgres, trust),
   migrated with `whymail.db.migrate.migrate_up`; dropped at the end, also on Ctrl-C and errors;
2. a local Ray with the shards, the Directory and one SMTP gateway on an ephemeral port, with a
   temporary state directory (Maildir under it; removed at the end);
3. the domain `bench.test` with `--mailboxes` users (quota 0), and a wait until the gateway's directory
   cache resolves every one of them;
4. two timed phases (small and large messages), each spread round-robin over the mailboxes and sent over
   `--connections` concurrent SMTP sessions that stay open. The client is a small asyncio raw-socket
   SMTP client using PIPELINING: MAIL+RCPT+DATA in one write, three replies, then body + `.`, one
   reply. A phase is timed from the first connect to the last `250` (sent only once a message is
   durable);
5. verification: the database holds exactly the expected messages per mailbox, the Maildir holds as many
   files, and every DATA reply was 250 (anything else is counted and reported).

Output: a short summary on stdout and the full JSON in `bench/results/smtp-<UTC timestamp>.json`
(throughput, MB/s, client-side latency percentiles, shard calls/items -> average batch size, CPU seconds
per process group, machine description). `--profile` additionally samples the gateway, the shards and
the client with py-spy during each phase and prints the hottest functions of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DOMAIN = "bench.test"
SENDER = "sender@bench.example"
PASSWORD = "bench password 123"
HOSTNAME = "mx.bench.test"


# --------------------------------------------------------------------------------------------------
# The client: raw asyncio sockets, PIPELINING, one session for many messages.
# --------------------------------------------------------------------------------------------------


class SmtpError(Exception):
    """The session cannot continue (connection lost, unexpected greeting, ...)."""


@dataclass(slots=True)
class Reply:
    code: int
    text: str  # last line, without CRLF


class PipeliningClient:
    """A minimal ESMTP client for load generation: one connection, many transactions.

    `send()` writes MAIL FROM, RCPT TO and DATA in one segment (RFC 2920), reads the three replies, then
    writes the (already dot-stuffed, CRLF-terminated) message plus the terminating `.` in one more
    write and reads the final reply. It returns the final reply; a refused MAIL/RCPT/DATA is returned
    as that reply (after RSET, so the session can go on).
    """

    def __init__(self, host: str, port: int, helo: str = "bench-client.example") -> None:
        self.host = host
        self.port = port
        self.helo = helo
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.extensions: set[str] = set()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = await self._reply()
        if greeting.code != 220:
            raise SmtpError(f"greeting: {greeting.code} {greeting.text}")
        self.writer.write(f"EHLO {self.helo}\r\n".encode())
        code, lines = await self._reply_lines()
        if code != 250:
            raise SmtpError(f"EHLO: {code} {lines[-1]}")
        self.extensions = {line[4:].split(" ", 1)[0].upper() for line in lines[1:]}
        if "PIPELINING" not in self.extensions:
            raise SmtpError("server does not offer PIPELINING")

    async def _reply_lines(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        reader = self.reader
        while True:
            line = await reader.readline()
            if not line:
                raise SmtpError("connection closed by server")
            lines.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError as exc:
            raise SmtpError(f"malformed reply {lines[-1]!r}") from exc
        return code, lines

    async def _reply(self) -> Reply:
        # Fast path for the usual one-line reply.
        line = await self.reader.readline()
        if not line:
            raise SmtpError("connection closed by server")
        if line[3:4] == b"-":
            rest_code, rest = await self._reply_lines()
            return Reply(rest_code, rest[-1])
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        try:
            return Reply(int(line[:3]), text)
        except ValueError as exc:
            raise SmtpError(f"malformed reply {text!r}") from exc

    async def send(self, mail_from: str, rcpt: str, message: bytes) -> tuple[Reply, str]:
        """One transaction; returns (final reply, stage) with stage in MAIL/RCPT/DATA/DOT."""
        writer = self.writer
        writer.write(
            b"MAIL FROM:<%s> SIZE=%d\r\nRCPT TO:<%s>\r\nDATA\r\n"
            % (mail_from.encode(), len(message), rcpt.encode())
        )
        mail = await self._reply()
        rcpt_reply = await self._reply()
        data = await self._reply()
        if data.code != 354:
            self.writer.write(b"RSET\r\n")
            await self._reply()
            if mail.code != 250:
                return mail, "MAIL"
            if rcpt_reply.code != 250:
                return rcpt_reply, "RCPT"
            return data, "DATA"
        writer.write(message + b".\r\n")  # one write, one send(): body and terminator together
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()
        final = await self._reply()
        if mail.code != 250:  # cannot happen when DATA got 354, but never trust a 250 after a refusal
            return mail, "MAIL"
        if rcpt_reply.code != 250:
            return rcpt_reply, "RCPT"
        return final, "DOT"

    async def probe(self, mail_from: str, rcpt: str) -> Reply:
        """MAIL + RCPT + RSET: is `rcpt` accepted? (no message is sent)."""
        self.writer.write(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nRSET\r\n" % (mail_from.encode(), rcpt.encode()))
        await self._reply()
        answer = await self._reply()
        await self._reply()
        return answer

    async def quit(self) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self._reply(), 5)
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        self.writer = None


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------

_TEXT = (
    "the quarterly report shows growth in every region and the team would like to thank all of you "
    "for your hard work please find the numbers below and let me know if anything looks wrong we will "
    "discuss next steps at the meeting on thursday lunch is provided as usual bring your questions "
    "mail server delivery throughput latency shard gateway postgres maildir fsync batch actor"
)
_WORDS = _TEXT.split(" ")


def filler(size: int, seed: int) -> bytes:
    """Plain-text lines (<= 76 chars, CRLF, never starting with '.') of exactly `size` bytes."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    total = 0
    while total < size:
        words: list[str] = []
        length = 0
        while length < 60:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        line = (" ".join(words)).encode() + b"\r\n"
        lines.append(line)
        total += len(line)
    data = b"".join(lines)
    if len(data) > size:
        cut = data[: max(size - 2, 0)]
        data = cut + b"\r\n" if size >= 2 else b""
    return data


class MessageFactory:
    """Builds message i of a phase: unique headers (Message-ID, Subject) + a shared body, `size` bytes."""

    def __init__(self, phase: str, size: int, run_id: str) -> None:
        self.phase = phase
        self.run_id = run_id
        self.date = email.utils.formatdate(usegmt=True)
        sample = self._header(10**9, "user00@" + DOMAIN)
        self.body = filler(max(size - len(sample), 64), seed=sum(phase.encode()))

    def _header(self, index: int, rcpt: str) -> bytes:
        return (
            f"From: Bench Sender <{SENDER}>\r\n"
            f"To: <{rcpt}>\r\n"
            f"Subject: bench {self.phase} message {index}\r\n"
            f"Date: {self.date}\r\n"
            f"Message-ID: <{self.phase}.{index}.{self.run_id}@bench.example>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
        ).encode()

    def message(self, index: int, rcpt: str) -> bytes:
        return self._header(index, rcpt) + self.body


# --------------------------------------------------------------------------------------------------
# CPU accounting per process group (from /proc), and machine description
# --------------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _read_proc(pid: int) -> tuple[str, int, float] | None:
    """(command line, parent pid, CPU seconds used so far) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    comm_end = stat.rfind(")")
    comm = stat[stat.find("(") + 1 : comm_end]
    fields = stat[comm_end + 2 :].split()
    # fields[0] is the state (stat field 3): ppid is field 4, utime 14, stime 15
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return (cmd or f"[{comm}]"), int(fields[1]), cpu


def _read_stime(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except OSError:
        return 0.0
    return int(stat[stat.rfind(")") + 2 :].split()[12]) / _TICKS


def thread_snapshot(pids: list[int]) -> dict[tuple[int, int], tuple[str, float, float]]:
    """(pid, tid) -> (thread name, user s, system s) for every thread of `pids`."""
    snap: dict[tuple[int, int], tuple[str, float, float]] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    stat = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            end = stat.rfind(")")
            name = stat[stat.find("(") + 1 : end]
            fields = stat[end + 2 :].split()
            snap[(pid, int(tid))] = (name, int(fields[11]) / _TICKS, int(fields[12]) / _TICKS)
    return snap


def python_thread_names(pids: list[int]) -> dict[int, str]:
    """OS thread id -> Python thread name, from `py-spy dump --json` (empty if py-spy is missing)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    names: dict[int, str] = {}
    for pid in pids:
        try:
            out = subprocess.run(
                [py_spy, "dump", "--json", "-p", str(pid)], capture_output=True, timeout=20
            ).stdout
            for thread in json.loads(out or b"[]"):
                if thread.get("os_thread_id") and thread.get("thread_name"):
                    names[int(thread["os_thread_id"])] = thread["thread_name"]
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
    return names


def threads_by_name(
    before: dict, after: dict, label_of: dict[int, str], py_names: dict[int, str]
) -> dict[str, dict[str, list[float]]]:
    """Per process label: thread name (digits folded) -> [user s, system s] used between the snapshots.

    Python threads carry their Python name (`MainThread` runs Ray's task loop and (de)serialises
    arguments, `AsyncIO Thread: default` runs the actor's event loop, `<shard>-io_N` the executor);
    threads without one are Ray's native (C++) threads, named `native`.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for key, (_os_name, user, system) in after.items():
        prev = before.get(key)
        du = user - (prev[1] if prev else 0.0)
        ds = system - (prev[2] if prev else 0.0)
        if du + ds <= 0:
            continue
        folded = re.sub(r"_\d+$", "_N", py_names[key[1]]) if key[1] in py_names else "native"
        slot = out.setdefault(label_of.get(key[0], str(key[0])), {}).setdefault(folded, [0.0, 0.0])
        slot[0] += du
        slot[1] += ds
    return {
        label: {n: [round(u, 2), round(s, 2)] for n, (u, s) in sorted(t.items(), key=lambda kv: -sum(kv[1]))}
        for label, t in out.items()
    }


@dataclass
class ProcSnapshot:
    procs: dict[int, tuple[str, int, float]]
    mine: set[int]  # this process and its descendants (our Ray: gcs, raylet, workers)


def cpu_snapshot() -> ProcSnapshot:
    procs: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_proc(int(entry))
            if info is not None:
                procs[int(entry)] = info
    children: dict[int, list[int]] = {}
    for pid, (_cmd, ppid, _cpu) in procs.items():
        children.setdefault(ppid, []).append(pid)
    mine: set[int] = set()
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid not in mine:
            mine.add(pid)
            todo.extend(children.get(pid, ()))
    return ProcSnapshot(procs, mine)


def classify(pid: int, cmd: str, mine: set[int], db_name: str) -> str:
    """Process group of `pid`; anything not ours (other sessions, tests) is "foreign"."""
    if pid == os.getpid():
        return "client+driver"
    if pid in mine:
        if cmd.startswith("ray::SmtpGateway"):
            return "gateway"
        if cmd.startswith("ray::MailboxShard"):
            return "shards"
        if cmd.startswith("ray::Directory"):
            return "directory"
        if "py-spy" in cmd:
            return "profiler"
        return "ray-infra"
    if cmd.startswith("postgres:"):
        if f" {db_name} " in cmd:
            return "postgres"
        if " postgres " in cmd or "whymail_" in cmd:  # a session of some other database
            return "foreign"
        return "postgres-bg"  # checkpointer, WAL writer, ... shared by every database
    if cmd.startswith("/usr/lib/postgresql"):
        return "postgres-bg"
    if cmd.startswith("["):
        return "kernel"  # kernel threads: jbd2 (journal commits for fsync), kworkers, ...
    return "foreign"


def cpu_by_group(before: ProcSnapshot, after: ProcSnapshot, db_name: str) -> tuple[dict[str, float], list]:
    """CPU seconds (user + system) per process group between two snapshots, and the top foreign processes."""
    groups: Counter[str] = Counter()
    foreign: Counter[str] = Counter()
    mine = before.mine | after.mine
    for pid, (cmd, _ppid, cpu) in after.procs.items():
        prev = before.procs.get(pid)
        used = cpu - (prev[2] if prev is not None and prev[0] == cmd else 0.0)
        if used > 0:
            group = classify(pid, cmd, mine, db_name)
            groups[group] += used
            if group in ("foreign", "kernel"):
                foreign[f"{group}: {cmd[:80]}"] += used
    top_foreign = [[name, round(sec, 2)] for name, sec in foreign.most_common(8)]
    return {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}, top_foreign


def find_pids(prefix: str) -> list[int]:
    """Our own (descendants of this process) processes whose title starts with `prefix`."""
    snap = cpu_snapshot()
    return sorted(
        pid for pid, (cmd, _ppid, _cpu) in snap.procs.items() if pid in snap.mine and cmd.startswith(prefix)
    )


def _own_pid(_actor: object) -> int:
    return os.getpid()


def actor_pids(cluster) -> dict:
    """Pids of the gateway and of each shard (by actor name), asked from the actors themselves."""
    import ray

    try:
        gateway = ray.get(cluster.smtp_gateways[0].__ray_call__.remote(_own_pid), timeout=30)
        shards = ray.get([h.__ray_call__.remote(_own_pid) for h in cluster.shards], timeout=30)
        return {
            "gateway": gateway,
            "shards": dict(zip(cluster.shard_names, shards, strict=True)),
            "client": os.getpid(),
        }
    except Exception as exc:  # an older Ray without __ray_call__: find them by process title
        print(f"[bench] __ray_call__ failed ({exc!r}); finding actor pids by process title", file=sys.stderr)
        shard_pids = find_pids("ray::MailboxShard")
        return {
            "gateway": find_pids("ray::SmtpGateway")[0],
            "shards": {f"shard-pid{pid}": pid for pid in shard_pids},
            "client": os.getpid(),
        }


def machine_info(admin_dsn_version: str, state_dir: Path) -> dict:
    import aiosmtpd
    import asyncpg
    import ray

    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    fs = ""
    with contextlib.suppress(Exception):
        fs = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "asyncpg": asyncpg.__version__,
        "aiosmtpd": aiosmtpd.__version__,
        "postgres": admin_dsn_version,
        "state_dir_fs": fs,
        "load_average_at_start": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    count: int
    size_target: int
    connections: int
    bytes_sent: int = 0
    accepted: int = 0
    duration_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    replies: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_phase(
    name: str, count: int, size: int, port: int, connections: int, users: list[str], run_id: str
) -> PhaseResult:
    result = PhaseResult(name=name, count=count, size_target=size, connections=connections)
    factory = MessageFactory(name, size, run_id)
    next_index = itertools.count()
    clock = time.perf_counter
    latencies = result.latencies
    completions = result.completions
    replies = result.replies
    failures = result.failures
    n_users = len(users)
    last_ok = 0.0

    async def session(number: int) -> None:
        nonlocal last_ok
        reconnects = 0
        client = PipeliningClient("127.0.0.1", port, helo=f"bench-{number}.example")
        await client.connect()
        try:
            while True:
                index = next(next_index)
                if index >= count:
                    return
                rcpt = users[index % n_users]
                message = factory.message(index, rcpt)
                started = clock()
                try:
                    reply, stage = await client.send(SENDER, rcpt, message)
                except (SmtpError, ConnectionError, OSError) as exc:
                    failures[f"session {number}: {type(exc).__name__}: {exc}"] += 1
                    replies["(connection lost)"] += 1
                    reconnects += 1
                    if reconnects > 3:
                        result.errors.append(
                            f"session {number} gave up after {reconnects} reconnects: {exc!r}"
                        )
                        return
                    await client.quit()
                    client = PipeliningClient("127.0.0.1", port, helo=f"bench-{number}.example")
                    await client.connect()
                    continue
                done = clock()
                latencies.append(done - started)
                completions.append(done)
                replies[reply.code] += 1
                if reply.code == 250 and stage == "DOT":
                    result.accepted += 1
                    result.bytes_sent += len(message)
                    last_ok = done
                else:
                    failures[f"{stage}: {reply.text}"] += 1
        finally:
            await client.quit()

    start = clock()
    outcomes = await asyncio.gather(*(session(i) for i in range(connections)), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors.append(repr(outcome))
    result.duration_s = (last_ok or clock()) - start
    result.completions = [t - start for t in completions]
    return result


def summarize_phase(
    result: PhaseResult,
    stats_before: dict,
    stats_after: dict,
    cpu: dict[str, float],
    foreign: list,
    cpu_window_s: float,
) -> dict:
    lat = sorted(result.latencies)
    calls = {
        k: stats_after["shard_calls"].get(k, 0) - stats_before["shard_calls"].get(k, 0)
        for k in stats_after["shard_calls"]
    }
    items = {
        k: stats_after["shard_items"].get(k, 0) - stats_before["shard_items"].get(k, 0)
        for k in stats_after["shard_items"]
    }
    total_calls = sum(calls.values())
    total_items = sum(items.values())
    per_second: Counter[int] = Counter(int(t) for t in result.completions)
    duration = result.duration_s or 1e-9
    ms = 1000.0
    return {
        "name": result.name,
        "messages": result.count,
        "message_size_target": result.size_target,
        "avg_message_bytes": round(result.bytes_sent / result.accepted) if result.accepted else 0,
        "connections": result.connections,
        "accepted_250": result.accepted,
        "duration_s": round(result.duration_s, 3),
        "messages_per_s": round(result.accepted / duration, 1),
        "mb_per_s": round(result.bytes_sent / duration / 1e6, 2),
        "latency_ms": {
            "p50": round(percentile(lat, 50) * ms, 2),
            "p95": round(percentile(lat, 95) * ms, 2),
            "p99": round(percentile(lat, 99) * ms, 2),
            "max": round(lat[-1] * ms, 2) if lat else 0.0,
            "mean": round(sum(lat) / len(lat) * ms, 2) if lat else 0.0,
        },
        "replies": {str(k): v for k, v in result.replies.items()},
        "non_250": dict(result.failures.most_common(20)),
        "errors": result.errors,
        "shard_calls": calls,
        "shard_items": items,
        "avg_batch_items": round(total_items / total_calls, 2) if total_calls else 0.0,
        "gateway_calls_per_s": round(total_calls / duration, 1),
        "cpu_seconds": cpu,
        "cpu_window_s": round(cpu_window_s, 3),
        "cpu_ms_per_message": {k: round(1000.0 * v / max(result.accepted, 1), 3) for k, v in cpu.items()},
        "cpu_utilisation_of_machine": round(sum(cpu.values()) / (cpu_window_s * (os.cpu_count() or 1)), 3),
        "foreign_cpu_share": round(cpu.get("foreign", 0.0) / (cpu_window_s * (os.cpu_count() or 1)), 3),
        "top_foreign_processes": foreign,
        "throughput_per_second": [
            per_second.get(s, 0) for s in range(int(max(result.completions, default=0)) + 1)
        ],
    }


# --------------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------------


def dsn_for(admin_dsn: str, database: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


async def create_database(admin_dsn: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrate(dsn: str, *, no_fts: bool = False) -> None:
    import asyncpg

    from whymail.db.migrate import migrate_up

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await migrate_up(conn)
        if no_fts:
            await conn.execute("ALTER TABLE messages DROP COLUMN search_vector")
    finally:
        await conn.close()


async def create_users(dsn: str, count: int) -> list[str]:
    import asyncpg

    from whymail.auth.passwords import hash_password
    from whymail.directory import service

    password_hash = hash_password(PASSWORD, rounds=4)
    users = [f"user{i:02d}@{DOMAIN}" for i in range(count)]
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await service.add_domain(conn, DOMAIN)
        for address in users:
            await service.add_user(conn, address, password_hash, quota_bytes=0)
    finally:
        await conn.close()
    return users


async def stored_counts(dsn: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            """SELECT u.email, count(m.id) AS n
                 FROM users u JOIN domains d ON d.id = u.domain_id
                 LEFT JOIN messages m ON m.user_id = u.id
                WHERE d.name = $1 GROUP BY u.email""",
            DOMAIN,
        )
        return {r["email"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def table_stats(dsn: str) -> dict[str, dict[str, int]]:
    """pg_stat_user_tables of the tables the delivery path touches (sequential scans show a bad plan)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            """SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd,
                      n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count
                 FROM pg_stat_user_tables WHERE relname IN ('messages', 'mailboxes', 'users')"""
        )
        return {r["relname"]: {k: (v or 0) for k, v in dict(r).items() if k != "relname"} for r in rows}
    finally:
        await conn.close()


async def sample_rows(dsn: str, limit: int = 50) -> list[tuple[str, int]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT maildir_path, size FROM messages ORDER BY random() LIMIT $1", limit)
        return [(r["maildir_path"], r["size"]) for r in rows]
    finally:
        await conn.close()


def expected_counts(users: list[str], phases: list[int]) -> dict[str, int]:
    expected = dict.fromkeys(users, 0)
    for count in phases:
        for i, user in enumerate(users):
            expected[user] += count // len(users) + (1 if i < count % len(users) else 0)
    return expected


def maildir_file_count(root: Path) -> int:
    total = 0
    domain_dir = root / DOMAIN
    if not domain_dir.is_dir():
        return 0
    for user in domain_dir.iterdir():
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError), os.scandir(user / sub) as entries:
                total += sum(1 for _ in entries)
    return total


# --------------------------------------------------------------------------------------------------
# py-spy profiling (optional)
# --------------------------------------------------------------------------------------------------


class Profiler:
    """py-spy `record --format raw` against the gateway, the shards and this process (the client)."""

    def __init__(self, out_dir: Path, rate: int, mode: str) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.mode = mode
        self.procs: list[tuple[str, Path, subprocess.Popen]] = []

    def start(self, targets: dict[str, int]) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in targets.items():
            out = self.out_dir / f"{label}.txt"
            cmd = [
                py_spy,
                "record",
                "--nonblocking",
                "-r",
                str(self.rate),
                "-f",
                "raw",
                "-o",
                str(out),
                "-p",
                str(pid),
            ]
            if self.mode == "gil":
                cmd.append("--gil")  # only the thread holding the GIL: where Python CPU time goes
            elif self.mode == "idle":
                cmd.append("--idle")  # every thread, waiting or not: wall-clock view
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.procs.append((label, out, proc))
        time.sleep(0.5)  # let py-spy attach before the load starts

    def stop(self) -> dict[str, Path]:
        written: dict[str, Path] = {}
        for _label, _out, proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for label, out, proc in self.procs:
            try:
                _stdout, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                stderr = b""
            if out.exists():
                written[label] = out
            else:
                print(
                    f"py-spy for {label} wrote nothing: {stderr.decode(errors='replace')[-300:]}",
                    file=sys.stderr,
                )
        return written


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--small", type=int, default=20000, help="messages in the small-message phase")
    parser.add_argument("--large", type=int, default=2000, help="messages in the large-message phase")
    parser.add_argument("--small-size", type=int, default=2 * 1024, help="bytes per small message")
    parser.add_argument("--large-size", type=int, default=50 * 1024, help="bytes per large message")
    parser.add_argument("--connections", type=int, default=20, help="concurrent SMTP sessions")
    parser.add_argument("--mailboxes", type=int, default=20, help="recipient users (round-robin)")
    parser.add_argument("--shards", type=int, default=2, help="MailboxShard actors")
    parser.add_argument("--calls-in-flight", type=int, default=1, help="gateway calls in flight per shard")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2000 small + 200 large")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("WHYMAIL_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="server log level (INFO logs one JSON line per message, forwarded to this driver)",
    )
    parser.add_argument(
        "--commands-per-minute",
        type=int,
        default=100_000_000,
        help="per-IP SMTP command rate limit (the default 6000/min would throttle a loopback bench)",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="storage.fsync=false (shows what durability costs)"
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="client event loop (uvloop if installed)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the gateway, shards and client during each phase"
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        default=50,
        help="py-spy samples per second (py-spy costs CPU too: keep it low on 2 cores)",
    )
    parser.add_argument(
        "--profile-mode",
        choices=["gil", "active", "idle"],
        default="gil",
        help="gil: GIL holder only (Python CPU); active: non-idle threads; idle: all threads",
    )
    parser.add_argument(
        "--no-fts",
        action="store_true",
        help="experiment: drop messages.search_vector (and its GIN index) in the bench database, to measure "
        "what full-text indexing costs the delivery path; not a supported configuration",
    )
    parser.add_argument(
        "--tmp-dir",
        default=None,
        help="parent of the temporary state directory (the Maildir lives there; default: $TMPDIR or /tmp)",
    )
    parser.add_argument("--results-dir", default=str(BENCH_DIR / "results"), help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large = 2000, 200
    if args.mailboxes < 1 or args.connections < 1 or args.shards < 1:
        parser.error("--mailboxes, --connections and --shards must be >= 1")
    return args


def _run(coro, loop_kind: str):
    factory = None
    if loop_kind == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM -> same cleanup as Ctrl-C
    raise KeyboardInterrupt


async def wait_for_users(port: int, users: list[str], timeout: float = 20.0) -> None:
    """Until every user gets `250` to RCPT TO (the gateway's directory cache has them)."""
    deadline = time.monotonic() + timeout
    client = PipeliningClient("127.0.0.1", port, helo="bench-probe.example")
    await client.connect()
    try:
        missing = list(users)
        while missing:
            missing = [u for u in missing if (await client.probe(SENDER, u)).code != 250]
            if missing:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway never accepted {len(missing)} users, e.g. {missing[0]}")
                await asyncio.sleep(0.1)
    finally:
        await client.quit()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    run_id = uuid.uuid4().hex[:10]
    db_name = f"whymail_bench_{run_id}"
    dsn = dsn_for(args.admin_dsn, db_name)
    state_dir = Path(tempfile.mkdtemp(prefix="whymail-bench-", dir=args.tmp_dir))
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    db_created = False
    ray_started = False
    cluster = None
    exit_code = 1
    try:
        print(f"[bench] database {db_name}, state dir {state_dir}", flush=True)
        pg_version = asyncio.run(create_database(args.admin_dsn, db_name))
        db_created = True
        asyncio.run(migrate(dsn, no_fts=args.no_fts))
        users = asyncio.run(create_users(dsn, args.mailboxes))

        import ray

        from actors.cluster import start_actors, start_ray, stop_actors
        from whymail.config import load_config
        from whymail.runtime import Runtime

        env = {
            "WHYMAIL__SERVER__HOSTNAME": HOSTNAME,
            "WHYMAIL__RAY__SHARDS": str(args.shards),
            "WHYMAIL__RAY__CALLS_IN_FLIGHT": str(args.calls_in_flight),
            "WHYMAIL__RAY__NAMESPACE": f"whymail-bench-{run_id}",
            "WHYMAIL__LOGGING__LEVEL": args.log_level.upper(),
            "WHYMAIL__LIMITS__COMMANDS_PER_MINUTE": str(args.commands_per_minute),
            "WHYMAIL__LIMITS__MAX_CONNECTIONS_PER_IP": str(max(50, args.connections + 5)),
            "WHYMAIL__STORAGE__FSYNC": "false" if args.no_fsync else "true",
        }
        config = load_config(None, env=env)
        runtime = Runtime(config=config, state_dir=str(state_dir), dsn=dsn)
        runtime.maildir_root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        start_ray("", config.ray.namespace)
        ray_started = True
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # ray.init installs its own (sys.exit)
        cluster = start_actors(
            runtime, smtp_port=0, submission_port=0, smtps_port=0, imap_port=0, imaps_port=0, http_port=0
        )
        gateway = cluster.smtp_gateways[0]
        port = cluster.smtp_port
        print(
            f"[bench] Ray + actors up in {time.monotonic() - t0:.1f}s; SMTP on 127.0.0.1:{port}", flush=True
        )
        version = ray.get(gateway.wait_directory_version.remote(1, 10.0))
        _run(wait_for_users(port, users), args.loop)
        print(f"[bench] gateway directory version {version} resolves all {len(users)} users", flush=True)

        pids = actor_pids(cluster)
        machine = machine_info(pg_version, state_dir)
        phases_out: list[dict] = []
        profile_files: dict[str, dict[str, Path]] = {}
        expected_total: list[int] = []
        verification: dict = {"ok": True, "checks": []}
        for phase_name, count, size in (
            ("small", args.small, args.small_size),
            ("large", args.large, args.large_size),
        ):
            if count <= 0:
                continue
            profiler = None
            if args.profile:
                targets = {"gateway": pids["gateway"], "client": os.getpid(), **pids["shards"]}
                profiler = Profiler(
                    results_dir / f"profile-{stamp}" / phase_name, args.profile_rate, args.profile_mode
                )
                profiler.start(targets)
            print(
                f"[bench] phase {phase_name}: {count} x {size} B over {args.connections} connections ...",
                flush=True,
            )
            stats_before = ray.get(gateway.stats.remote())
            pg_before = asyncio.run(table_stats(dsn))
            label_of = {pids["gateway"]: "gateway", os.getpid(): "client"}
            label_of.update({pid: name for name, pid in pids["shards"].items()})
            py_names = python_thread_names(list(label_of))
            threads_before = thread_snapshot(list(label_of))
            cpu_before = cpu_snapshot()
            window_start = time.perf_counter()
            result = _run(
                run_phase(phase_name, count, size, port, args.connections, users, run_id), args.loop
            )
            cpu_after = cpu_snapshot()
            cpu_window = time.perf_counter() - window_start
            threads_after = thread_snapshot(list(label_of))
            py_names.update(python_thread_names(list(label_of)))  # executor threads start lazily
            stats_after = ray.get(gateway.stats.remote())
            time.sleep(0.6)  # PostgreSQL publishes table statistics every 500 ms
            pg_after = asyncio.run(table_stats(dsn))
            if profiler is not None:
                profile_files[phase_name] = profiler.stop()
            cpu, foreign = cpu_by_group(cpu_before, cpu_after, db_name)
            summary = summarize_phase(result, stats_before, stats_after, cpu, foreign, cpu_window)
            summary["pg_table_stats_delta"] = {
                table: {k: v - pg_before.get(table, {}).get(k, 0) for k, v in cols.items()}
                for table, cols in pg_after.items()
            }
            summary["threads_cpu_user_system"] = threads_by_name(
                threads_before, threads_after, label_of, py_names
            )
            phases_out.append(summary)
            expected_total.append(count)
            stored = asyncio.run(stored_counts(dsn))
            expected = expected_counts(users, expected_total)
            db_total, want_total = sum(stored.values()), sum(expected.values())
            wrong_users = {u: (stored.get(u, 0), n) for u, n in expected.items() if stored.get(u, 0) != n}
            check = {
                "after_phase": phase_name,
                "db_messages": db_total,
                "expected": want_total,
                "all_replies_250": result.accepted == count and not result.failures,
                "users_with_wrong_count": {
                    u: {"stored": s, "expected": e} for u, (s, e) in wrong_users.items()
                },
            }
            verification["checks"].append(check)
            if db_total != want_total or wrong_users or not check["all_replies_250"] or result.errors:
                verification["ok"] = False
            print(
                f"[bench]   {summary['messages_per_s']:.0f} msg/s, {summary['mb_per_s']:.2f} MB/s, "
                f"p50 {summary['latency_ms']['p50']:.1f} ms, batch {summary['avg_batch_items']:.1f}; "
                f"db {db_total}/{want_total}",
                flush=True,
            )

        files = maildir_file_count(runtime.maildir_root)
        verification["maildir_files"] = files
        verification["maildir_files_expected"] = sum(expected_total)
        bad_sizes = 0
        for relpath, size in asyncio.run(sample_rows(dsn)):
            path = runtime.maildir_root / relpath
            if not path.is_file() or path.stat().st_size != size:
                bad_sizes += 1
        verification["sampled_rows_with_bad_file"] = bad_sizes
        if files != sum(expected_total) or bad_sizes:
            verification["ok"] = False

        final_stats = ray.get(gateway.stats.remote())
        report = {
            "benchmark": "smtp_delivery",
            "started_at": started_at.isoformat(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "options": vars(args),
            "server_config": {
                "shards": config.ray.shards,
                "fsync": config.storage.fsync,
                "full_text_index": not args.no_fts,
                "log_level": config.logging.level,
                "commands_per_minute": config.limits.commands_per_minute,
                "db_pool": [config.db.min_pool, config.db.max_pool],
            },
            "machine": machine,
            "pids": pids,
            "phases": phases_out,
            "verification": verification,
            "gateway_stats": final_stats,
            "profiles": {ph: {k: str(v) for k, v in files.items()} for ph, files in profile_files.items()},
        }
        out = results_dir / f"smtp-{stamp}.json"
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print_summary(report, out)
        if profile_files:
            from profile_summary import print_profile

            for phase_name, files in profile_files.items():
                for label, path in files.items():
                    print_profile(f"{phase_name} / {label}", path, top=15, rate=args.profile_rate)
        exit_code = 0 if verification["ok"] else 2
    except KeyboardInterrupt:
        print("\n[bench] interrupted; cleaning up", file=sys.stderr)
        exit_code = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        try:
            if cluster is not None:
                with contextlib.suppress(Exception):
                    stop_actors(cluster, grace=2.0)
            if ray_started:
                import ray

                with contextlib.suppress(Exception):
                    ray.shutdown()
            if db_created:
                try:
                    asyncio.run(drop_database(args.admin_dsn, db_name))
                except Exception as exc:
                    print(f"[bench] could not drop database {db_name}: {exc!r}", file=sys.stderr)
            shutil.rmtree(state_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return exit_code


def print_summary(report: dict, out: Path) -> None:
    m = report["machine"]
    print()
    print(
        f"WhyMail SMTP delivery benchmark  ({m['nproc']} CPU {m['cpu_model']}, Python {m['python']}, "
        f"Ray {m['ray']}, PostgreSQL {m['postgres']})"
    )
    print(
        f"shards={report['server_config']['shards']} fsync={report['server_config']['fsync']} "
        f"fts={report['server_config']['full_text_index']} "
        f"connections={report['options']['connections']} mailboxes={report['options']['mailboxes']}"
    )
    header = (
        f"{'phase':<6} {'msgs':>7} {'size':>7} {'secs':>7} {'msg/s':>8} {'MB/s':>7} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'batch':>6} {'non-250':>7}"
    )
    print(header)
    print("-" * len(header))
    for p in report["phases"]:
        non250 = p["messages"] - p["accepted_250"]
        print(
            f"{p['name']:<6} {p['messages']:>7} {p['avg_message_bytes']:>7} {p['duration_s']:>7.2f} "
            f"{p['messages_per_s']:>8.0f} {p['mb_per_s']:>7.2f} {p['latency_ms']['p50']:>7.1f} "
            f"{p['latency_ms']['p95']:>7.1f} {p['latency_ms']['p99']:>7.1f} {p['avg_batch_items']:>6.1f} "
            f"{non250:>7}"
        )
    for p in report["phases"]:
        cpu = ", ".join(f"{k} {v:.1f}s" for k, v in p["cpu_seconds"].items())
        total_ms = sum(p["cpu_ms_per_message"].values()) - p["cpu_ms_per_message"].get("foreign", 0.0)
        print(
            f"cpu {p['name']}: {cpu}  (machine {p['cpu_utilisation_of_machine'] * 100:.0f}% busy; "
            f"{total_ms:.2f} ms of CPU per message, foreign excluded)"
        )
        for label, threads in p.get("threads_cpu_user_system", {}).items():
            if label == "client":
                continue
            label = label.replace("mailbox-shard-", "shard")
            user = sum(v[0] for v in threads.values())
            system = sum(v[1] for v in threads.values())
            top = ", ".join(f"{n} {u + s_:.1f}s" for n, (u, s_) in list(threads.items())[:4])
            print(f"  {label}: user {user:.1f}s + system {system:.1f}s; threads: {top}")
        if p["foreign_cpu_share"] > 0.05:
            print(
                f"  WARNING: the machine was shared: {p['foreign_cpu_share'] * 100:.0f}% of all CPU went to other "
                f"processes ({', '.join(name for name, _ in p['top_foreign_processes'][:3])}); "
                "these numbers are pessimistic"
            )
        if p["non_250"]:
            print(f"  non-250 replies in {p['name']}: {p['non_250']}")
        if p["errors"]:
            print(f"  errors in {p['name']}: {p['errors'][:5]}")
    v = report["verification"]
    last = v["checks"][-1] if v["checks"] else {}
    print(
        f"verification: {'OK' if v['ok'] else 'FAILED'} — db {last.get('db_messages')}/{last.get('expected')}, "
        f"maildir files {v['maildir_files']}/{v['maildir_files_expected']}, "
        f"sampled rows with a bad file {v['sampled_rows_with_bad_file']}"
    )
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
