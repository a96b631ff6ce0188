#!/usr/bin/env python
"""Submission + relay benchmark (issue 5): authenticated submitters -> SmtpGateway (587) -> outbound
queue -> DeliveryQueue -> a remote MX (Postfix smtp-sink on loopback). Target: >= 1,000 msg/s end to end
with 2 KB messages and 20 concurrent submitters.

Run as `make bench-submission` (or `.venv/bin/python bench/submission_relay.py --help`). It builds the
same throw-away system as `bench/smtp_delivery.py` (whose helpers it imports):

1. a fresh PostgreSQL database `whymail_bench_<random>` (dropped at the end, also on Ctrl-C and errors),
   the local domain `submit.test` with `--concurrency` senders (`sender00@submit.test` ...; bcrypt
   cost 4 so that 20 logins are quick);
2. a loopback DNS server (`tests/support/dnsserver.py`) that answers `MX remote.example -> 127.0.0.1`,
   and Postfix's smtp-sink (`tests/support/smtpsink.py`) on a free port, which `relay.mx_port` points at;
3. a local Ray with the shards, the Directory, one DeliveryQueue per `--queue-workers` and the
   gateways on ephemeral ports (`actors.cluster.start_actors`);
4. `--concurrency` submitters, each one session on the submission port: EHLO, STARTTLS, EHLO, AUTH PLAIN,
   then its share of `--messages` messages of `--size` bytes to `rcptNN@remote.example`, MAIL + RCPT +
   DATA pipelined (RFC 2920; the gateway offers PIPELINING, and so does every MTA that submits),
   `--no-pipelining` for one command per round trip like smtplib. Sessions are open (TLS + AUTH)
   before the clock starts;
5. timing: *submission* from the first MAIL to the last `250` (sent once the Sent copy and the queue
   rows are committed); *end to end* from the first MAIL until smtp-sink has counted every message
   (its `-c` counters, polled every 5 ms); then the `outbound_queue` rows must all be `sent`.

Output: a short summary on stdout and the full JSON in `bench/results/submission-<UTC stamp>.json`
(`--json-out` to change): rates, DATA-reply latency percentiles, deliveries per second, queue state,
CPU seconds per process group and per thread of the gateway and the queue actors, the queue's and the
gateway's own counters. Exit code 0 = verified, 2 = verification failed, 130 = interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.utils
import json
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import smtp_delivery as sd  # noqa: E402  (also puts the repository root on sys.path)

from tests.support.dnsserver import ZoneServer  # noqa: E402
from tests.support.smtpsink import SMTP_SINK, PostfixSink  # noqa: E402

LOCAL_DOMAIN = "submit.test"
REMOTE_DOMAIN = "remote.example"
REMOTE_RECIPIENTS = 100  # rcpt00 .. rcpt99@remote.example, round-robin
PASSWORD = "bench password 123"
HOSTNAME = "mx.submit.test"
TARGET_MSG_PER_S = 1000


# --------------------------------------------------------------------------------------------------
# The submitter: STARTTLS + AUTH PLAIN on one session, then many transactions
# --------------------------------------------------------------------------------------------------


class SubmissionClient(sd.PipeliningClient):
    """`PipeliningClient` with what port 587 asks for first: STARTTLS (RFC 3207), then AUTH PLAIN (RFC 4954)."""

    def __init__(self, host: str, port: int, username: str, password: str, helo: str) -> None:
        super().__init__(host, port, helo=helo)
        self.username = username
        self.password = password

    async def _ehlo(self) -> set[str]:
        self.writer.write(f"EHLO {self.helo}\r\n".encode())
        code, lines = await self._reply_lines()
        if code != 250:
            raise sd.SmtpError(f"EHLO: {code} {lines[-1]}")
        return {line[4:].split(" ", 1)[0].upper() for line in lines[1:]}

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = await self._reply()
        if greeting.code != 220:
            raise sd.SmtpError(f"greeting: {greeting.code} {greeting.text}")
        if "STARTTLS" not in await self._ehlo():
            raise sd.SmtpError("the submission port does not offer STARTTLS")
        self.writer.write(b"STARTTLS\r\n")
        reply = await self._reply()
        if reply.code != 220:
            raise sd.SmtpError(f"STARTTLS: {reply.code} {reply.text}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed certificate
        await self.writer.start_tls(context, server_hostname=HOSTNAME)
        self.extensions = await self._ehlo()  # RFC 3207 §4.2: ask again after TLS
        token = base64.b64encode(f"\0{self.username}\0{self.password}".encode()).decode()
        self.writer.write(f"AUTH PLAIN {token}\r\n".encode())
        reply = await self._reply()
        if reply.code != 235:
            raise sd.SmtpError(f"AUTH PLAIN as {self.username}: {reply.code} {reply.text}")

    async def submit(
        self, mail_from: str, rcpt: str, message: bytes, pipelining: bool
    ) -> tuple[sd.Reply, str, float]:
        """One transaction: (final reply, stage MAIL/RCPT/DATA/DOT, seconds from the body write to the reply)."""
        if pipelining:
            reply, stage = await self._envelope_pipelined(mail_from, rcpt, len(message))
        else:
            reply, stage = await self._envelope_stepwise(mail_from, rcpt, len(message))
        if reply.code != 354:
            self.writer.write(b"RSET\r\n")
            await self._reply()
            return reply, stage, 0.0
        started = time.perf_counter()
        self.writer.write(message + b".\r\n")
        if self.writer.transport.get_write_buffer_size() > 65536:
            await self.writer.drain()
        final = await self._reply()
        return final, "DOT", time.perf_counter() - started

    async def _envelope_pipelined(self, mail_from: str, rcpt: str, size: int) -> tuple[sd.Reply, str]:
        self.writer.write(
            b"MAIL FROM:<%s> SIZE=%d\r\nRCPT TO:<%s>\r\nDATA\r\n" % (mail_from.encode(), size, rcpt.encode())
        )
        replies = [await self._reply() for _ in range(3)]
        for reply, stage, want in zip(replies, ("MAIL", "RCPT", "DATA"), (250, 250, 354), strict=True):
            if reply.code != want:
                return reply, stage
        return replies[2], "DATA"

    async def _envelope_stepwise(self, mail_from: str, rcpt: str, size: int) -> tuple[sd.Reply, str]:
        for line, stage, want in (
            (b"MAIL FROM:<%s> SIZE=%d\r\n" % (mail_from.encode(), size), "MAIL", 250),
            (b"RCPT TO:<%s>\r\n" % rcpt.encode(), "RCPT", 250),
            (b"DATA\r\n", "DATA", 354),
        ):
            self.writer.write(line)
            reply = await self._reply()
            if reply.code != want:
                return reply, stage
        return reply, "DATA"


class Messages:
    """Message i from sender s to a remote recipient: unique Message-ID and Subject, `size` bytes in all."""

    def __init__(self, size: int, run_id: str) -> None:
        self.run_id = run_id
        self.date = email.utils.formatdate(usegmt=True)
        sample = self._header(10**9, f"sender00@{LOCAL_DOMAIN}", f"rcpt00@{REMOTE_DOMAIN}")
        self.body = sd.filler(max(size - len(sample), 64), seed=5)

    def _header(self, index: int, sender: str, rcpt: str) -> bytes:
        return (
            f"From: Bench Submitter <{sender}>\r\n"
            f"To: <{rcpt}>\r\n"
            f"Subject: submission bench message {index}\r\n"
            f"Date: {self.date}\r\n"
            f"Message-ID: <sub.{index}.{self.run_id}@{LOCAL_DOMAIN}>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
        ).encode()

    def message(self, index: int, sender: str, rcpt: str) -> bytes:
        return self._header(index, sender, rcpt) + self.body


# --------------------------------------------------------------------------------------------------
# The remote side: smtp-sink counting what it receives
# --------------------------------------------------------------------------------------------------


class CountingSink(PostfixSink):
    """PostfixSink that only counts (`-c`) unless `dump`: `-d` writes one file per message, which costs
    the sink about 3x the CPU (7,000 vs 22,000 msg/s on this 2-core machine, 4 pipelining clients)."""

    def __init__(self, *, dump: bool) -> None:
        super().__init__(hostname=f"mx.{REMOTE_DOMAIN}")
        self.dump = dump

    def _command(self) -> list[str]:
        if self.dump:
            return super()._command()
        command = [SMTP_SINK, "-c", "-h", self.hostname]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        return [*command, f"{self.host}:{self.port}", "256"]

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    def messages_now(self) -> int:
        """smtp-sink's latest `mesg=` counter, from the end of its `-c` output (which grows by one
        `\\r`-terminated line per event, so reading it all at every poll would cost O(n))."""
        path = self._counters
        try:
            with path.open("rb") as f:
                f.seek(max(path.stat().st_size - 256, 0))
                tail = f.read()
        except OSError:
            return 0
        found = re.findall(rb"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0


class SinkMonitor(threading.Thread):
    """Polls the sink's counter every `interval` s and notes when it first reaches each total."""

    def __init__(self, sink: CountingSink, interval: float = 0.005) -> None:
        super().__init__(name="sink-monitor", daemon=True)
        self.sink = sink
        self.interval = interval
        self.baseline = sink.messages_now()
        self.samples: list[tuple[float, int]] = []  # (perf_counter, messages since baseline), on change
        self.target = 0
        self.reached = threading.Event()
        self._halt = threading.Event()

    def expect(self, count: int) -> None:
        self.target = count

    def run(self) -> None:
        last = -1
        while not self._halt.is_set():
            now = time.perf_counter()
            count = self.sink.messages_now() - self.baseline
            if count != last:
                self.samples.append((now, count))
                last = count
                if self.target and count >= self.target:
                    self.reached.set()
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def time_of(self, count: int) -> float | None:
        """perf_counter of the first sample at or above `count`."""
        for at, seen in self.samples:
            if seen >= count:
                return at
        return None


# --------------------------------------------------------------------------------------------------
# The timed run
# --------------------------------------------------------------------------------------------------


@dataclass
class SubmitResult:
    accepted: int = 0
    bytes_sent: int = 0
    transaction_s: list[float] = field(default_factory=list)  # MAIL written -> final reply read
    data_reply_s: list[float] = field(default_factory=list)  # body + "." written -> final reply read
    completions: list[float] = field(default_factory=list)  # perf_counter of each 250
    replies: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    connect_s: float = 0.0
    started: float = 0.0
    last_ok: float = 0.0


async def open_sessions(port: int, senders: list[str], count: int) -> list[SubmissionClient]:
    clients = [
        SubmissionClient(
            "127.0.0.1", port, senders[i % len(senders)], PASSWORD, helo=f"submitter-{i}.example"
        )
        for i in range(count)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    return clients


async def submit_all(
    port: int, senders: list[str], args: argparse.Namespace, run_id: str, on_start
) -> SubmitResult:
    """Connect every submitter (TLS + AUTH, untimed), then send `args.messages` over them, each session
    taking a fixed share (a real client sends its own mail, not the next one of a shared list)."""
    result = SubmitResult()
    factory = Messages(args.size, run_id)
    t0 = time.perf_counter()
    clients = await open_sessions(port, senders, args.concurrency)
    result.connect_s = time.perf_counter() - t0
    clock = time.perf_counter

    async def session(number: int, client: SubmissionClient) -> None:
        sender = client.username
        for index in range(number, args.messages, args.concurrency):
            rcpt = f"rcpt{index % REMOTE_RECIPIENTS:02d}@{REMOTE_DOMAIN}"
            message = factory.message(index, sender, rcpt)
            started = clock()
            try:
                reply, stage, data_s = await client.submit(sender, rcpt, message, not args.no_pipelining)
            except (sd.SmtpError, ConnectionError, OSError) as exc:
                result.errors.append(f"session {number}: {type(exc).__name__}: {exc}")
                return  # a lost submission session ends that submitter; its rest count as missing
            done = clock()
            result.replies[reply.code] += 1
            if reply.code == 250 and stage == "DOT":
                result.accepted += 1
                result.bytes_sent += len(message)
                result.transaction_s.append(done - started)
                result.data_reply_s.append(data_s)
                result.completions.append(done)
                result.last_ok = done
            else:
                result.failures[f"{stage}: {reply.code} {reply.text}"] += 1

    on_start()
    result.started = clock()
    try:
        outcomes = await asyncio.gather(
            *(session(i, c) for i, c in enumerate(clients)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                result.errors.append(repr(outcome))
    finally:
        await asyncio.gather(*(c.quit() for c in clients), return_exceptions=True)
    return result


def latency_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(sd.percentile(ordered, 50) * 1000, 2),
        "p95": round(sd.percentile(ordered, 95) * 1000, 2),
        "p99": round(sd.percentile(ordered, 99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2) if ordered else 0.0,
        "mean": round(sum(ordered) / len(ordered) * 1000, 2) if ordered else 0.0,
    }


def per_second(times: list[float], start: float) -> list[int]:
    counts = Counter(int(t - start) for t in times if t >= start)
    return [counts.get(s, 0) for s in range(max(counts, default=-1) + 1)]


def sink_per_second(samples: list[tuple[float, int]], start: float) -> list[int]:
    """Messages the sink counted in each second after `start`, from the monitor's (time, total) samples."""
    totals: dict[int, int] = {}
    for at, count in samples:
        if at >= start:
            totals[int(at - start)] = count
    out, previous = [], 0
    for second in range(max(totals, default=-1) + 1):
        current = totals.get(second, previous)
        out.append(current - previous)
        previous = current
    return out


# --------------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------------


async def create_senders(dsn: str, count: int) -> list[str]:
    import asyncpg

    from whymail.auth.passwords import hash_password
    from whymail.directory import service

    password_hash = hash_password(PASSWORD, rounds=4)
    senders = [f"sender{i:02d}@{LOCAL_DOMAIN}" for i in range(count)]
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await service.add_domain(conn, LOCAL_DOMAIN)
        for address in senders:
            await service.add_user(conn, address, password_hash, quota_bytes=0)
    finally:
        await conn.close()
    return senders


async def queue_state(dsn: str) -> dict:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        by_status = await conn.fetch("SELECT status, count(*) AS n FROM outbound_queue GROUP BY status")
        row = await conn.fetchrow(
            """SELECT count(*) AS rows, count(DISTINCT delivery_id) AS submissions,
                      count(*) FILTER (WHERE attempts > 1) AS retried, coalesce(max(attempts), 0) AS max_attempts,
                      count(*) FILTER (WHERE recipient_domain <> $1) AS other_domains
                 FROM outbound_queue""",
            REMOTE_DOMAIN,
        )
        errors = await conn.fetch(
            "SELECT last_error, count(*) AS n FROM outbound_queue WHERE last_error IS NOT NULL "
            "GROUP BY last_error ORDER BY n DESC LIMIT 5"
        )
        sent_copies = await conn.fetchval(
            "SELECT count(*) FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id WHERE mb.name = 'Sent'"
        )
        return {
            "by_status": {r["status"]: r["n"] for r in by_status},
            **{k: int(v) for k, v in dict(row).items()},
            "last_errors": {r["last_error"]: r["n"] for r in errors},
            "sent_copies": int(sent_copies),
        }
    finally:
        await conn.close()


async def wait_queue_sent(dsn: str, count: int, timeout: float) -> float | None:
    """Seconds until `count` rows are `sent` (polled every 50 ms), None on timeout."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < timeout:
            sent = await conn.fetchval("SELECT count(*) FROM outbound_queue WHERE status = 'sent'")
            if sent >= count:
                return time.perf_counter() - start
            await asyncio.sleep(0.05)
        return None
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------
# Where the CPU went: per process group and per thread, Python thread names asked from the actors
# --------------------------------------------------------------------------------------------------


def _thread_names(_actor: object) -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def actor_threads(handles: dict[str, object]) -> dict[int, str]:
    """OS thread id -> Python thread name in each actor (no py-spy needed: `__ray_call__` runs in it)."""
    import ray

    names: dict[int, str] = {}
    for _label, handle in handles.items():
        with contextlib.suppress(Exception):
            names.update(ray.get(handle.__ray_call__.remote(_thread_names), timeout=20))
    return names


def _actor_loop(actor: object) -> asyncio.AbstractEventLoop:
    """The actor's event loop, from the task its constructor created on it (all three kinds have one)."""
    task = getattr(actor, "_started", None) or getattr(actor, "_starting", None)
    return task.get_loop()


def _profile_start(actor: object) -> str:
    import cProfile

    profiler = cProfile.Profile()
    actor._bench_profiler = profiler
    # cProfile sees the thread that enables it: do it on the loop, wherever __ray_call__ runs.
    _actor_loop(actor).call_soon_threadsafe(profiler.enable)
    return threading.current_thread().name


def _profile_stop(actor: object, path: str) -> None:
    profiler = actor._bench_profiler

    def stop_and_dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    _actor_loop(actor).call_soon_threadsafe(stop_and_dump)


class LoopProfiler:
    """cProfile of the event-loop thread of some actors (py-spy is not always there): where their
    Python CPU goes. Deterministic profiling slows the profiled code down, so a profiled run is slower."""

    def __init__(self, handles: dict[str, object], out_dir: Path) -> None:
        self.handles = handles
        self.out_dir = out_dir
        self.files: dict[str, Path] = {}

    def start(self) -> None:
        import ray

        self.out_dir.mkdir(parents=True, exist_ok=True)
        ray.get([h.__ray_call__.remote(_profile_start) for h in self.handles.values()], timeout=30)

    def stop(self) -> dict[str, Path]:
        import ray

        for label, handle in self.handles.items():
            path = self.out_dir / f"{label}.pstats"
            ray.get(handle.__ray_call__.remote(_profile_stop, str(path)), timeout=30)
            self.files[label] = path
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(p.exists() for p in self.files.values()):
            time.sleep(0.1)
        return self.files


def print_loop_profile(label: str, path: Path, top: int = 18) -> list[str]:
    """The `top` functions by own time, with the cumulative time of each; also returned as lines."""
    import io
    import pstats

    if not path.exists():
        return [f"{label}: no profile written"]
    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    body = lines[lines.index(next(x for x in lines if x.lstrip().startswith("ncalls"))) :]
    print(f"\n--- cProfile of the {label} event loop (by own time) ---")
    for line in body:
        print(line)
    return body


def cpu_groups(
    before: sd.ProcSnapshot, after: sd.ProcSnapshot, db_name: str, labels: dict[int, str]
) -> tuple[dict[str, float], list]:
    """`smtp_delivery.cpu_by_group`, with our own labels for the pids it does not know (queues, sink)."""
    groups: Counter[str] = Counter()
    foreign: Counter[str] = Counter()
    mine = before.mine | after.mine
    for pid, (cmd, _ppid, cpu) in after.procs.items():
        prev = before.procs.get(pid)
        used = cpu - (prev[2] if prev is not None and prev[0] == cmd else 0.0)
        if used <= 0:
            continue
        group = labels.get(pid) or sd.classify(pid, cmd, mine, db_name)
        if group.startswith("shard"):
            group = "shards"
        groups[group] += used
        if group in ("foreign", "kernel"):
            foreign[f"{group}: {cmd[:80]}"] += used
    top = [[name, round(sec, 2)] for name, sec in foreign.most_common(8)]
    return {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}, top


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10000, help="messages submitted in all")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="submitters (one session and one user each)"
    )
    parser.add_argument("--size", type=int, default=2048, help="bytes per message as submitted")
    parser.add_argument(
        "--shards", type=int, default=2, help="MailboxShard actors (they store the Sent copies)"
    )
    parser.add_argument("--queue-workers", type=int, default=1, help="DeliveryQueue actors (queue.workers)")
    parser.add_argument(
        "--queue-batch-size", type=int, default=100, help="rows one DeliveryQueue claims (queue.batch_size)"
    )
    parser.add_argument(
        "--no-pipelining", action="store_true", help="MAIL, RCPT and DATA one round trip each (like smtplib)"
    )
    parser.add_argument("--no-fsync", action="store_true", help="storage.fsync=false (spool and Sent copies)")
    parser.add_argument(
        "--sink-dump", action="store_true", help="let smtp-sink write every message to a file (-d)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="longest wait for the sink to count everything, s"
    )
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("WHYMAIL_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="server log level (INFO logs a line per message)"
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="client event loop (uvloop if installed)",
    )
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="cProfile the event loops of the gateway and the DeliveryQueue(s) during the run (slows them)",
    )
    parser.add_argument("--tmp-dir", default=None, help="parent of the temporary state directory")
    parser.add_argument(
        "--results-dir", default=str(BENCH_DIR / "results"), help="where the JSON goes by default"
    )
    parser.add_argument(
        "--json-out", default=None, help="JSON path (default: <results-dir>/submission-<stamp>.json)"
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1 or args.shards < 1 or args.queue_workers < 1:
        parser.error("--messages, --concurrency, --shards and --queue-workers must be >= 1")
    if args.size < 512:
        parser.error("--size must be >= 512 (the headers alone take ~300 bytes)")
    return args


def server_env(args: argparse.Namespace, run_id: str, dns_address: str, mx_port: int) -> dict[str, str]:
    per_user = args.messages // args.concurrency + 1
    return {
        "WHYMAIL__SERVER__HOSTNAME": HOSTNAME,
        "WHYMAIL__RAY__SHARDS": str(args.shards),
        "WHYMAIL__RAY__NAMESPACE": f"whymail-bench-{run_id}",
        "WHYMAIL__LOGGING__LEVEL": args.log_level.upper(),
        "WHYMAIL__STORAGE__FSYNC": "false" if args.no_fsync else "true",
        # Everything comes from 127.0.0.1: the per-IP limits would throttle the bench, not a real client.
        "WHYMAIL__LIMITS__COMMANDS_PER_MINUTE": "100000000",
        "WHYMAIL__LIMITS__MAX_CONNECTIONS_PER_IP": str(max(50, args.concurrency + 5)),
        "WHYMAIL__LIMITS__PER_USER_DAILY_SEND": str(max(1000, 2 * per_user)),
        "WHYMAIL__DNS__NAMESERVERS": f"[{dns_address}]",
        "WHYMAIL__DNS__TIMEOUT": "2",
        "WHYMAIL__RELAY__MX_PORT": str(mx_port),
        "WHYMAIL__RELAY__TIMEOUT": "30",
        "WHYMAIL__QUEUE__WORKERS": str(args.queue_workers),
        "WHYMAIL__QUEUE__BATCH_SIZE": str(args.queue_batch_size),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, sd._raise_keyboard_interrupt)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    run_id = uuid.uuid4().hex[:10]
    db_name = f"whymail_bench_{run_id}"
    dsn = sd.dsn_for(args.admin_dsn, db_name)
    state_dir = Path(tempfile.mkdtemp(prefix="whymail-bench-", dir=args.tmp_dir))
    out = Path(args.json_out) if args.json_out else Path(args.results_dir) / f"submission-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    db_created = ray_started = False
    cluster = dns = sink = monitor = None
    exit_code = 1
    try:
        print(f"[bench] creating database {db_name} ...", flush=True)
        pg_version = asyncio.run(sd.create_database(args.admin_dsn, db_name))
        db_created = True
        asyncio.run(sd.migrate(dsn))
        senders = asyncio.run(create_senders(dsn, args.concurrency))

        dns = ZoneServer().start()
        dns.set_zone(
            f"{REMOTE_DOMAIN}. 300 IN MX 10 mx.{REMOTE_DOMAIN}.\nmx.{REMOTE_DOMAIN}. 300 IN A 127.0.0.1\n"
        )
        sink = CountingSink(dump=args.sink_dump).start()
        print(f"[bench] DNS on {dns.address}, smtp-sink on {sink.address} (pid {sink.pid})", flush=True)

        import ray

        from actors.cluster import start_actors, start_ray, stop_actors
        from whymail.config import load_config
        from whymail.runtime import Runtime

        config = load_config(None, env=server_env(args, run_id, dns.address, sink.port))
        runtime = Runtime(config=config, state_dir=str(state_dir), dsn=dsn)
        runtime.maildir_root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        start_ray("", config.ray.namespace)
        ray_started = True
        signal.signal(signal.SIGTERM, sd._raise_keyboard_interrupt)  # ray.init installs its own
        cluster = start_actors(
            runtime, smtp_port=0, submission_port=0, smtps_port=0, imap_port=0, imaps_port=0, http_port=0
        )
        gateway = cluster.smtp_gateways[0]
        port = cluster.submission_port
        ray.get(gateway.wait_directory_version.remote(1, 10.0))
        print(
            f"[bench] Ray + actors up in {time.monotonic() - t0:.1f}s; submission on 127.0.0.1:{port}, "
            f"{len(cluster.queues)} DeliveryQueue(s), {args.shards} shard(s)",
            flush=True,
        )

        pids = sd.actor_pids(cluster)
        queue_pids = {f"queue{i}": ray.get(q.pid.remote()) for i, q in enumerate(cluster.queues)}
        labels = {pids["gateway"]: "gateway", sink.pid: "smtp-sink", os.getpid(): "client+driver"}
        labels.update({pid: "queue" for pid in queue_pids.values()})
        labels.update({pid: "shards" for pid in pids["shards"].values()})
        traced = {"gateway": pids["gateway"], **queue_pids, **pids["shards"]}
        handles = {"gateway": gateway, **{f"queue{i}": q for i, q in enumerate(cluster.queues)}}
        handles.update(dict(zip(cluster.shard_names, cluster.shards, strict=True)))
        machine = sd.machine_info(pg_version, state_dir)

        monitor = SinkMonitor(sink)
        monitor.expect(args.messages)
        monitor.start()
        snapshots: dict[str, object] = {}

        profiler = None
        if args.cprofile:
            loops = {"gateway": gateway, **{f"queue{i}": q for i, q in enumerate(cluster.queues)}}
            profiler = LoopProfiler(loops, out.parent / f"cprofile-submission-{stamp}")
            profiler.start()

        def on_start() -> None:  # just before the first MAIL: the CPU window starts with the clock
            snapshots["threads"] = sd.thread_snapshot(list(traced.values()))
            snapshots["cpu"] = sd.cpu_snapshot()

        print(
            f"[bench] {args.messages} x {args.size} B from {args.concurrency} submitters "
            f"(STARTTLS + AUTH PLAIN, {'stepwise' if args.no_pipelining else 'pipelined'}) to @{REMOTE_DOMAIN} ...",
            flush=True,
        )
        result = sd._run(submit_all(port, senders, args, run_id, on_start), args.loop)
        submit_end = result.last_ok or time.perf_counter()
        print(
            f"[bench]   submitted {result.accepted} in {submit_end - result.started:.2f}s "
            f"(sessions opened in {result.connect_s:.2f}s); waiting for the sink ...",
            flush=True,
        )
        if not monitor.reached.wait(timeout=args.timeout):
            print(
                f"[bench]   the sink did not count {args.messages} messages within {args.timeout:.0f}s",
                flush=True,
            )
        cpu_after = sd.cpu_snapshot()
        threads_after = sd.thread_snapshot(list(traced.values()))
        profiles = profiler.stop() if profiler is not None else {}
        e2e_end = monitor.time_of(args.messages)
        window = (e2e_end or time.perf_counter()) - result.started
        queue_sent_after = asyncio.run(wait_queue_sent(dsn, args.messages, timeout=30.0))
        time.sleep(0.5)  # late duplicates would show up in the count now
        monitor.stop()
        sink_total = sink.messages_now() - monitor.baseline
        sink_sessions = sink.counters()[0] - sink._baseline  # SMTP connections the queue opened
        state = asyncio.run(queue_state(dsn))

        cpu, foreign = cpu_groups(snapshots["cpu"], cpu_after, db_name, labels)
        thread_names = actor_threads(handles)
        label_of = {pid: label for label, pid in traced.items()}
        threads = sd.threads_by_name(snapshots["threads"], threads_after, label_of, thread_names)
        queue_stats = {f"queue{i}": ray.get(q.stats.remote()) for i, q in enumerate(cluster.queues)}
        gateway_stats = ray.get(gateway.stats.remote())

        submit_s = submit_end - result.started
        e2e_s = (e2e_end - result.started) if e2e_end else None
        cores = os.cpu_count() or 1
        rounds = sum(s.get("rounds", 0) for s in queue_stats.values())
        entries = sum(s.get("entries", 0) for s in queue_stats.values())
        verification = {
            "all_replies_250": result.accepted == args.messages and not result.failures and not result.errors,
            "sink_messages": sink_total,
            "sink_expected": args.messages,
            "queue_rows": state["rows"],
            "queue_all_sent": state["by_status"].get("sent", 0) == args.messages == state["rows"],
            "queue_sent_after_sink_s": round(queue_sent_after, 3) if queue_sent_after is not None else None,
            "sent_copies": state["sent_copies"],
        }
        verification["ok"] = (
            verification["all_replies_250"]
            and sink_total == args.messages
            and verification["queue_all_sent"]
            and state["sent_copies"] == args.messages
        )
        report = {
            "benchmark": "submission_relay",
            "started_at": started_at.isoformat(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "options": vars(args),
            "target_msg_per_s": TARGET_MSG_PER_S,
            "server_config": {
                "shards": config.ray.shards,
                "queue_workers": config.queue.workers,
                "queue_batch_size": config.queue.batch_size,
                "fsync": config.storage.fsync,
                "log_level": config.logging.level,
                "db_pool": [config.db.min_pool, config.db.max_pool],
                "per_user_daily_send": config.limits.per_user_daily_send,
            },
            "machine": machine,
            "pids": {**pids, "queues": queue_pids, "smtp_sink": sink.pid},
            "submission": {
                "messages": args.messages,
                "accepted_250": result.accepted,
                "avg_message_bytes": round(result.bytes_sent / result.accepted) if result.accepted else 0,
                "sessions_open_s": round(result.connect_s, 3),
                "duration_s": round(submit_s, 3),
                "messages_per_s": round(result.accepted / submit_s, 1) if submit_s > 0 else 0.0,
                "data_reply_ms": latency_ms(result.data_reply_s),
                "transaction_ms": latency_ms(result.transaction_s),
                "replies": {str(k): v for k, v in result.replies.items()},
                "non_250": dict(result.failures.most_common(20)),
                "errors": result.errors[:20],
                "per_second": per_second(result.completions, result.started),
            },
            "end_to_end": {
                "duration_s": round(e2e_s, 3) if e2e_s else None,
                "messages_per_s": round(args.messages / e2e_s, 1) if e2e_s else None,
                "sink_sessions": sink_sessions,
                "messages_per_sink_session": round(sink_total / sink_sessions, 1) if sink_sessions else None,
                "drain_after_last_250_s": round(e2e_end - submit_end, 3) if e2e_end else None,
                "sink_per_second": sink_per_second(monitor.samples, result.started),
                "target_met": bool(e2e_s and args.messages / e2e_s >= TARGET_MSG_PER_S),
            },
            "queue_state": state,
            "queue_stats": queue_stats,
            "queue_avg_entries_per_round": round(entries / rounds, 1) if rounds else 0.0,
            "gateway_stats": gateway_stats,
            "cpu_seconds": cpu,
            "cpu_window_s": round(window, 3),
            "cpu_ms_per_message": {k: round(1000.0 * v / args.messages, 3) for k, v in cpu.items()},
            "cpu_utilisation_of_machine": round(sum(cpu.values()) / (window * cores), 3),
            "foreign_cpu_share": round(cpu.get("foreign", 0.0) / (window * cores), 3),
            "top_foreign_processes": foreign,
            "threads_cpu_user_system": threads,
            "verification": verification,
            "cprofile": {label: str(path) for label, path in profiles.items()},
        }
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print_summary(report, out)
        for label, path in profiles.items():
            print_loop_profile(label, path)
        exit_code = 0 if verification["ok"] else 2
    except KeyboardInterrupt:
        print("\n[bench] interrupted; cleaning up", file=sys.stderr)
        exit_code = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        try:
            if monitor is not None:
                monitor.stop()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    stop_actors(cluster, grace=2.0)
            if ray_started:
                import ray

                with contextlib.suppress(Exception):
                    ray.shutdown()
            if sink is not None:
                sink.close()
            if dns is not None:
                with contextlib.suppress(Exception):
                    dns.stop()
            if db_created:
                try:
                    asyncio.run(sd.drop_database(args.admin_dsn, db_name))
                except Exception as exc:
                    print(f"[bench] could not drop database {db_name}: {exc!r}", file=sys.stderr)
            shutil.rmtree(state_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return exit_code


def print_summary(report: dict, out: Path) -> None:
    m, s, e, q = report["machine"], report["submission"], report["end_to_end"], report["queue_state"]
    cfg = report["server_config"]
    print()
    print(
        f"WhyMail submission + relay benchmark  ({m['nproc']} CPU {m['cpu_model']}, Python {m['python']}, "
        f"Ray {m['ray']}, PostgreSQL {m['postgres']})"
    )
    print(
        f"{s['messages']} x {s['avg_message_bytes']} B, {report['options']['concurrency']} submitters, "
        f"shards={cfg['shards']} queue workers={cfg['queue_workers']} batch={cfg['queue_batch_size']} "
        f"fsync={cfg['fsync']}"
    )
    lat = s["data_reply_ms"]
    print(
        f"submission : {s['accepted_250']} x 250 in {s['duration_s']:.2f}s = {s['messages_per_s']:.0f} msg/s; "
        f"DATA reply p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms"
    )
    if e["duration_s"]:
        verdict = "met" if e["target_met"] else "NOT met"
        print(
            f"end to end : sink counted all in {e['duration_s']:.2f}s = {e['messages_per_s']:.0f} msg/s "
            f"(target {report['target_msg_per_s']}: {verdict}); drain after the last 250: "
            f"{e['drain_after_last_250_s']:.2f}s"
        )
    else:
        print(f"end to end : the sink counted only {report['verification']['sink_messages']}")
    print(
        f"queue      : {q['by_status']}, {q['retried']} retried, "
        f"{report['queue_avg_entries_per_round']} entries per round, {e['sink_sessions']} SMTP sessions to the sink; "
        f"Sent copies {q['sent_copies']}"
    )
    cpu = ", ".join(f"{k} {v:.1f}s" for k, v in report["cpu_seconds"].items())
    own = sum(v for k, v in report["cpu_ms_per_message"].items() if k != "foreign")
    print(
        f"cpu        : {cpu}  (machine {report['cpu_utilisation_of_machine'] * 100:.0f}% busy; "
        f"{own:.2f} ms of CPU per message, foreign excluded)"
    )
    for label, threads in report["threads_cpu_user_system"].items():
        top = ", ".join(f"{n} {u + sy:.1f}s" for n, (u, sy) in list(threads.items())[:4])
        print(f"  {label}: {top}")
    if report["foreign_cpu_share"] > 0.05:
        print(
            f"  WARNING: {report['foreign_cpu_share'] * 100:.0f}% of all CPU went to other processes "
            f"({', '.join(n for n, _ in report['top_foreign_processes'][:3])}); these numbers are pessimistic"
        )
    if s["non_250"]:
        print(f"  non-250 replies: {s['non_250']}")
    if s["errors"]:
        print(f"  errors: {s['errors'][:5]}")
    v = report["verification"]
    print(
        f"verification: {'OK' if v['ok'] else 'FAILED'} — sink {v['sink_messages']}/{v['sink_expected']}, "
        f"queue rows {v['queue_rows']} all sent: {v['queue_all_sent']}, Sent copies {v['sent_copies']}"
    )
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
