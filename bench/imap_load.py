#!/usr/bin/env python
"""IMAP load benchmark (issue 4): many concurrent IMAP sessions against the ImapGateway actor.

Run as `.venv/bin/python bench/imap_load.py` (`--quick` for a smoke run, `--help` for options). It builds
the same throw-away system as `bench/smtp_delivery.py` (whose helpers it imports): a fresh PostgreSQL
database, a local Ray with the shards, the Directory, one SMTP and one IMAP gateway on ephemeral ports,
a temporary state directory; all removed at the end, also on Ctrl-C / SIGTERM.

1. populate: `--users` users, each receiving `--messages` messages of `--size` bytes (10 KB) through
   SMTP PIPELINING (durable once `250`), verified in the database;
2. phase `list`: `--sessions` sessions (LOGIN with the plaintext password on the plain port from
   loopback, which the gateway allows) each looping `LIST "" "*"` for `--duration` seconds;
3. phase `fetch`: `--sessions` sessions with INBOX selected, looping `UID FETCH <random uid> BODY.PEEK[]`;
4. phase `mix`: a realistic mix (SELECT, FETCH 1:* FLAGS, UID FETCH BODY.PEEK[], UID STORE +FLAGS,
   UID SEARCH UNSEEN, APPEND 10 KB, UID STORE \\Deleted + EXPUNGE of a message the session appended,
   NOOP), weights in MIX below;
5. phase `idle`: `--idle` connections each doing LOGIN + SELECT INBOX + IDLE, held open; VmRSS of the
   IMAP gateway actor process is read from /proc before and after -> MB per 100 connections.

Ops/s per command and client-side latency percentiles (write of the command -> tagged reply) go to the
summary and to `bench/results/imap-<UTC stamp>.json`. The client is a small asyncio raw-socket IMAP
client (`ImapClient`), one command in flight per session, literals read with readexactly, on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import smtp_delivery as sd  # noqa: E402  (also puts the repository root on sys.path)

PASSWORD = sd.PASSWORD
TARGETS = {"list_per_s": 2500, "fetch_full_per_s": 1000, "idle_mb_per_100": 20.0}
# Realistic mix: command -> weight (per session loop iteration).
MIX = {
    "NOOP": 10,
    "SELECT": 5,
    "FETCH_FLAGS": 10,
    "FETCH_BODY": 30,
    "STORE": 15,
    "SEARCH": 10,
    "APPEND": 10,
    "EXPUNGE": 10,
}


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------


class ImapError(Exception):
    pass


class ImapClient:
    """Minimal IMAP4rev1 client: tagged commands, one in flight, literals (`{N}` / `{N+}`) handled."""

    __slots__ = ("host", "port", "reader", "writer", "_tag", "literal_bytes")

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._tag = 0
        self.literal_bytes = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = await self.reader.readline()
        if not line.startswith(b"* OK"):
            raise ImapError(f"greeting: {line!r}")

    async def _read_response(self) -> tuple[bytes, int]:
        """One response (a line plus any literals it carries); returns (the lines joined, literal bytes)."""
        reader = self.reader
        line = await reader.readline()
        if not line:
            raise ImapError("connection closed by server")
        if not line.endswith(b"}\r\n"):
            return line, 0
        parts = [line]
        total = 0
        while line.endswith(b"}\r\n"):
            start = line.rfind(b"{")
            size = int(line[start + 1 : -3].rstrip(b"+"))
            await reader.readexactly(size)
            total += size
            line = await reader.readline()
            if not line:
                raise ImapError("connection closed inside a literal")
            parts.append(line)
        return b"".join(parts), total

    async def command(
        self, text: bytes, *, collect: bool = False, literal: bytes | None = None
    ) -> tuple[bytes, list[bytes]]:
        """Send `tag text` (plus a LITERAL+ literal); returns (tagged status line, untagged lines if collect)."""
        self._tag += 1
        tag = b"a%d" % self._tag
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:
            self.writer.write(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
            if self.writer.transport.get_write_buffer_size() > 65536:
                await self.writer.drain()
        untagged: list[bytes] = []
        prefix = tag + b" "
        while True:
            resp, nbytes = await self._read_response()
            self.literal_bytes += nbytes
            if resp.startswith(prefix):
                return resp[len(prefix) :].rstrip(b"\r\n"), untagged
            if collect:
                untagged.append(resp)

    async def ok(self, text: bytes, **kw) -> list[bytes]:
        status, untagged = await self.command(text, **kw)
        if not status.startswith(b"OK"):
            raise ImapError(f"{text[:40]!r}: {status!r}")
        return untagged

    async def login(self, user: str, password: str) -> None:
        await self.ok(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))

    async def select(self, mailbox: bytes = b"INBOX") -> None:
        await self.ok(b"SELECT " + mailbox)

    async def uids(self) -> list[int]:
        lines = await self.ok(b"UID SEARCH ALL", collect=True)
        out: list[int] = []
        for line in lines:
            if line.startswith(b"* SEARCH"):
                out.extend(int(x) for x in line[8:].split())
        return out

    async def idle(self) -> None:
        self._tag += 1
        self.writer.write(b"i%d IDLE\r\n" % self._tag)
        while True:
            line = await self.reader.readline()
            if not line:
                raise ImapError("closed before IDLE continuation")
            if line.startswith(b"+"):
                return
            if line.startswith(b"i%d " % self._tag):
                raise ImapError(f"IDLE refused: {line!r}")

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    async def logout(self) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.command(b"LOGOUT"), 5)
        self.close()


# --------------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.fail: Counter[str] = Counter()
        self.errors: list[str] = []
        self.bytes: Counter[str] = Counter()

    def summary(self, duration: float) -> dict:
        out: dict = {}
        for name, values in sorted(self.lat.items()):
            values.sort()
            out[name] = {
                "count": len(values),
                "ops_per_s": round(len(values) / duration, 1),
                "p50_ms": round(sd.percentile(values, 50) * 1000, 2),
                "p95_ms": round(sd.percentile(values, 95) * 1000, 2),
                "p99_ms": round(sd.percentile(values, 99) * 1000, 2),
                "max_ms": round(values[-1] * 1000, 2) if values else 0.0,
                "literal_mb_per_s": round(self.bytes[name] / duration / 1e6, 2) if self.bytes[name] else 0.0,
            }
        return out


def vm_rss_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                out[key] = int(value.split()[0])
    return out


def py_spy_dump(pid: int) -> str:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        return subprocess.run(
            [py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy dump failed: {exc!r}"


async def open_session(port: int, user: str, select: bool) -> ImapClient:
    client = ImapClient("127.0.0.1", port)
    await client.connect()
    await client.login(user, PASSWORD)
    if select:
        await client.select()
    return client


# --------------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------------


async def populate(
    smtp_port: int, users: list[str], per_user: int, size: int, run_id: str, connections: int = 20
) -> float:
    factory = sd.MessageFactory("imap", size, run_id)
    total = per_user * len(users)
    counter = iter(range(total))
    failures = Counter()

    async def worker() -> None:
        client = sd.PipeliningClient("127.0.0.1", smtp_port, helo="bench-populate.example")
        await client.connect()
        try:
            for index in counter:
                rcpt = users[index % len(users)]
                reply, stage = await client.send(sd.SENDER, rcpt, factory.message(index, rcpt))
                if reply.code != 250:
                    failures[f"{stage} {reply.code} {reply.text}"] += 1
        finally:
            await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    if failures:
        raise RuntimeError(f"populate failed: {dict(failures)}")
    return time.perf_counter() - t0


async def timed_phase(
    name: str, port: int, users: list[str], sessions: int, duration: float, body, *, select: bool, seed: int
) -> dict:
    """Open `sessions` sessions (not timed), then run `body(client, state, stats, rng)` until the deadline."""
    stats = Stats()
    clients: list[ImapClient] = []
    sem = asyncio.Semaphore(50)

    async def opener(i: int) -> ImapClient:
        async with sem:
            return await open_session(port, users[i % len(users)], select)

    t_open = time.perf_counter()
    clients = list(await asyncio.gather(*(opener(i) for i in range(sessions))))
    open_s = time.perf_counter() - t_open
    states = []
    for c in clients:
        states.append({"uids": await c.uids() if select else [], "appended": []})
    deadline = 0.0
    start = time.perf_counter()
    deadline = start + duration

    async def loop(i: int) -> None:
        client, state = clients[i], states[i]
        rng = random.Random(seed * 1000 + i)
        try:
            while time.perf_counter() < deadline:
                await body(client, state, stats, rng)
        except Exception as exc:  # a lost session is reported, the others go on
            stats.errors.append(f"session {i}: {exc!r}")

    await asyncio.gather(*(loop(i) for i in range(sessions)))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.logout() for c in clients))
    per_cmd = stats.summary(elapsed)
    return {
        "name": name,
        "sessions": sessions,
        "duration_s": round(elapsed, 3),
        "session_open_s": round(open_s, 3),
        "commands": per_cmd,
        "total_ops_per_s": round(sum(v["count"] for v in per_cmd.values()) / elapsed, 1),
        "failures": dict(stats.fail.most_common(20)),
        "errors": stats.errors[:20],
        "error_count": len(stats.errors),
    }


async def _timed(client: ImapClient, stats: Stats, name: str, text: bytes, **kw) -> tuple[bytes, list[bytes]]:
    before = client.literal_bytes
    t0 = time.perf_counter()
    status, untagged = await client.command(text, **kw)
    stats.lat[name].append(time.perf_counter() - t0)
    stats.bytes[name] += client.literal_bytes - before
    if not status.startswith(b"OK"):
        stats.fail[f"{name}: {status[:80].decode(errors='replace')}"] += 1
    return status, untagged


async def body_list(client, state, stats, rng) -> None:
    await _timed(client, stats, "LIST", b'LIST "" "*"')


async def body_fetch(client, state, stats, rng) -> None:
    uid = rng.choice(state["uids"])
    before = client.literal_bytes
    await _timed(client, stats, "FETCH_BODY", b"UID FETCH %d BODY.PEEK[]" % uid)
    if client.literal_bytes == before:
        stats.fail["FETCH_BODY: no literal returned"] += 1


_MIX_NAMES = list(MIX)
_MIX_WEIGHTS = list(MIX.values())


def make_body_mix(message: bytes):
    async def body_mix(client, state, stats, rng) -> None:
        op = rng.choices(_MIX_NAMES, _MIX_WEIGHTS)[0]
        uids = state["uids"]
        if op == "NOOP":
            await _timed(client, stats, op, b"NOOP")
        elif op == "SELECT":
            await _timed(client, stats, op, b"SELECT INBOX")
        elif op == "FETCH_FLAGS":
            await _timed(client, stats, op, b"FETCH 1:* (UID FLAGS)")
        elif op == "FETCH_BODY":
            await _timed(client, stats, op, b"UID FETCH %d BODY.PEEK[]" % rng.choice(uids))
        elif op == "STORE":
            flag = rng.choice((b"\\Seen", b"\\Flagged", b"\\Answered"))
            sign = rng.choice((b"+", b"-"))
            await _timed(
                client, stats, op, b"UID STORE %d %sFLAGS.SILENT (%s)" % (rng.choice(uids), sign, flag)
            )
        elif op == "SEARCH":
            await _timed(client, stats, op, b"UID SEARCH UNSEEN")
        elif op == "APPEND":
            status, _ = await _timed(client, stats, op, b"APPEND INBOX (\\Seen)", literal=message)
            # [APPENDUID validity uid] (UIDPLUS)
            if b"APPENDUID" in status:
                with contextlib.suppress(ValueError, IndexError):
                    state["appended"].append(int(status.split(b"APPENDUID", 1)[1].split()[1].rstrip(b"]")))
        elif op == "EXPUNGE":
            if state["appended"]:
                uid = state["appended"].pop()
                await _timed(client, stats, "STORE_DELETED", b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            await _timed(client, stats, op, b"EXPUNGE")

    return body_mix


async def idle_phase(port: int, users: list[str], count: int, gateway_pid: int) -> dict:
    await asyncio.sleep(1.0)
    before = vm_rss_kb(gateway_pid)
    clients: list[ImapClient] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(50)
    lat: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                client = await open_session(port, users[i % len(users)], True)
                await client.idle()
            except Exception as exc:
                errors.append(f"{i}: {exc!r}")
                return
            lat.append(time.perf_counter() - t0)
            clients.append(client)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    open_s = time.perf_counter() - t0
    await asyncio.sleep(2.0)
    after = vm_rss_kb(gateway_pid)
    await asyncio.sleep(3.0)
    after_5s = vm_rss_kb(gateway_pid)
    held = len(clients)
    for c in clients:
        c.close()
    await asyncio.sleep(2.0)
    released = vm_rss_kb(gateway_pid)
    delta_mb = (after_5s.get("VmRSS", 0) - before.get("VmRSS", 0)) / 1024
    lat.sort()
    return {
        "name": "idle",
        "requested": count,
        "held_open": held,
        "open_s": round(open_s, 2),
        "setup_latency_ms": {
            "p50": round(sd.percentile(lat, 50) * 1000, 2),
            "p95": round(sd.percentile(lat, 95) * 1000, 2),
        },
        "gateway_pid": gateway_pid,
        "gateway_status_kb_before": before,
        "gateway_status_kb_after": after,
        "gateway_status_kb_after_5s": after_5s,
        "gateway_status_kb_after_close": released,
        "rss_growth_mb": round(delta_mb, 2),
        "mb_per_100_connections": round(delta_mb / held * 100, 2) if held else None,
        "errors": errors[:20],
        "error_count": len(errors),
    }


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--messages", type=int, default=200, help="messages per user")
    p.add_argument("--size", type=int, default=10_240, help="message size in bytes")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per timed phase")
    p.add_argument("--idle", type=int, default=1000, help="idle (IDLE) connections to hold open")
    p.add_argument("--phases", default="list,fetch,mix,idle", help="comma-separated subset")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 10 users x 50 messages, 5 s phases, 300 idle"
    )
    p.add_argument("--profile", action="store_true", help="py-spy record the gateway in each timed phase")
    p.add_argument("--profile-rate", type=int, default=50)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument(
        "--admin-dsn",
        default=os.environ.get("WHYMAIL_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--results-dir", default=str(BENCH_DIR / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.messages, args.duration, args.idle = 10, 50, 5.0, 300
    return args


def raise_nofile(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard) if hard != resource.RLIM_INFINITY else max(soft, want)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    nofile = raise_nofile(args.idle + args.sessions + 1024)
    signal.signal(signal.SIGTERM, sd._raise_keyboard_interrupt)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    run_id = uuid.uuid4().hex[:10]
    db_name = f"whymail_bench_{run_id}"
    dsn = sd.dsn_for(args.admin_dsn, db_name)
    state_dir = Path(tempfile.mkdtemp(prefix="whymail-imapbench-", dir=args.tmp_dir))
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    db_created = ray_started = False
    cluster = None
    exit_code = 1
    try:
        print(f"[imap-bench] database {db_name}, state dir {state_dir}, RLIMIT_NOFILE {nofile}", flush=True)
        pg_version = asyncio.run(sd.create_database(args.admin_dsn, db_name))
        db_created = True
        asyncio.run(sd.migrate(dsn))
        users = asyncio.run(sd.create_users(dsn, args.users))

        import ray

        from actors.cluster import start_actors, start_ray, stop_actors
        from whymail.config import load_config
        from whymail.runtime import Runtime

        max_conn = args.idle + args.sessions + 100
        env = {
            "WHYMAIL__SERVER__HOSTNAME": sd.HOSTNAME,
            "WHYMAIL__RAY__SHARDS": str(args.shards),
            "WHYMAIL__RAY__NAMESPACE": f"whymail-imapbench-{run_id}",
            "WHYMAIL__LOGGING__LEVEL": args.log_level.upper(),
            "WHYMAIL__LIMITS__COMMANDS_PER_MINUTE": "100000000",
            "WHYMAIL__LIMITS__MAX_CONNECTIONS_PER_IP": str(max_conn),
            "WHYMAIL__LIMITS__MAX_CONNECTIONS": str(max_conn),
            "WHYMAIL__STORAGE__FSYNC": "false",  # populate fast; IMAP reads don't fsync anyway
        }
        config = load_config(None, env=env)
        runtime = Runtime(config=config, state_dir=str(state_dir), dsn=dsn)
        runtime.maildir_root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        start_ray("", config.ray.namespace)
        ray_started = True
        signal.signal(signal.SIGTERM, sd._raise_keyboard_interrupt)
        cluster = start_actors(
            runtime, smtp_port=0, submission_port=0, smtps_port=0, imap_port=0, imaps_port=0, http_port=0
        )
        smtp_port, imap_port = cluster.smtp_port, cluster.imap_port
        print(
            f"[imap-bench] Ray + actors up in {time.monotonic() - t0:.1f}s; SMTP {smtp_port}, IMAP {imap_port}",
            flush=True,
        )
        ray.get(cluster.smtp_gateways[0].wait_directory_version.remote(1, 10.0))
        sd._run(sd.wait_for_users(smtp_port, users), args.loop)
        gateway_pid = ray.get(cluster.imap_gateways[0].__ray_call__.remote(sd._own_pid), timeout=30)
        machine = sd.machine_info(pg_version, state_dir)

        total = args.users * args.messages
        print(f"[imap-bench] populating {total} x {args.size} B via SMTP ...", flush=True)
        pop_s = sd._run(populate(smtp_port, users, args.messages, args.size, run_id), args.loop)
        stored = asyncio.run(sd.stored_counts(dsn))
        if sum(stored.values()) != total:
            raise RuntimeError(f"populate: {sum(stored.values())} stored, expected {total}")
        print(f"[imap-bench]   {total} messages in {pop_s:.1f}s ({total / pop_s:.0f} msg/s)", flush=True)

        message = sd.MessageFactory("append", args.size, run_id).message(0, users[0])
        bodies = {
            "list": (body_list, False),
            "fetch": (body_fetch, True),
            "mix": (make_body_mix(message), True),
        }
        out_phases: list[dict] = []
        dumps: dict[str, str] = {}
        profiles: dict[str, str] = {}
        for seed, name in enumerate(phases):
            print(f"[imap-bench] phase {name} ...", flush=True)
            cpu_before = sd.cpu_snapshot()
            gw_cpu0 = (sd._read_proc(gateway_pid) or ("", 0, 0.0))[2]
            w0 = time.perf_counter()
            profiler = None
            if args.profile and name in bodies:
                profiler = sd.Profiler(results_dir / f"profile-imap-{stamp}" / name, args.profile_rate, "gil")
                profiler.start({"gateway": gateway_pid})
            if name in bodies:
                body, select = bodies[name]

                async def run_with_dump(body=body, select=select, name=name, seed=seed):
                    task = asyncio.ensure_future(
                        timed_phase(
                            name,
                            imap_port,
                            users,
                            args.sessions,
                            args.duration,
                            body,
                            select=select,
                            seed=seed,
                        )
                    )
                    await asyncio.sleep(min(3.0, args.duration / 2) + 1.0)
                    if not task.done():
                        dumps[name] = await asyncio.get_running_loop().run_in_executor(
                            None, py_spy_dump, gateway_pid
                        )
                    return await task

                result = sd._run(run_with_dump(), args.loop)
            elif name == "idle":
                result = sd._run(idle_phase(imap_port, users, args.idle, gateway_pid), args.loop)
            else:
                print(f"[imap-bench] unknown phase {name}", file=sys.stderr)
                continue
            if profiler is not None:
                files = profiler.stop()
                profiles.update({f"{name}/{k}": str(v) for k, v in files.items()})
            cpu, foreign = sd.cpu_by_group(cpu_before, sd.cpu_snapshot(), db_name)
            window = time.perf_counter() - w0
            gw_cpu = (sd._read_proc(gateway_pid) or ("", 0, 0.0))[2] - gw_cpu0
            result["imap_gateway_cpu_s"] = round(gw_cpu, 2)  # smtp_delivery.classify files it under ray-infra
            result["imap_gateway_cpu_share_of_one_core"] = round(gw_cpu / window, 3)
            result["cpu_seconds"] = cpu
            result["cpu_window_s"] = round(window, 2)
            result["top_foreign_processes"] = foreign
            out_phases.append(result)
            print_phase(result)

        report = {
            "benchmark": "imap_load",
            "started_at": started_at.isoformat(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "options": vars(args),
            "mix_weights": MIX,
            "targets": TARGETS,
            "server_config": {
                "shards": config.ray.shards,
                "db_pool": [config.db.min_pool, config.db.max_pool],
                "log_level": config.logging.level,
            },
            "machine": machine,
            "gateway_pid": gateway_pid,
            "populate": {"messages": total, "size": args.size, "seconds": round(pop_s, 2)},
            "phases": out_phases,
            "verdict": verdict(out_phases),
            "py_spy_dumps": dumps,
            "profiles": profiles,
        }
        out = results_dir / f"imap-{stamp}.json"
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print_summary(report, out)
        if profiles:
            from profile_summary import print_profile

            for label, path in profiles.items():
                print_profile(label, Path(path), top=12, rate=args.profile_rate)
        exit_code = 0 if all(p.get("error_count", 0) == 0 for p in out_phases) else 2
    except KeyboardInterrupt:
        print("\n[imap-bench] interrupted; cleaning up", file=sys.stderr)
        exit_code = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
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
                    asyncio.run(sd.drop_database(args.admin_dsn, db_name))
                except Exception as exc:
                    print(f"[imap-bench] could not drop database {db_name}: {exc!r}", file=sys.stderr)
            shutil.rmtree(state_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return exit_code


def verdict(phases: list[dict]) -> dict:
    by = {p["name"]: p for p in phases}
    out: dict = {}
    if "list" in by and "LIST" in by["list"]["commands"]:
        v = by["list"]["commands"]["LIST"]["ops_per_s"]
        out["list_per_s"] = {"value": v, "target": TARGETS["list_per_s"], "met": v >= TARGETS["list_per_s"]}
    if "fetch" in by and "FETCH_BODY" in by["fetch"]["commands"]:
        v = by["fetch"]["commands"]["FETCH_BODY"]["ops_per_s"]
        out["fetch_full_per_s"] = {
            "value": v,
            "target": TARGETS["fetch_full_per_s"],
            "met": v >= TARGETS["fetch_full_per_s"],
        }
    if "idle" in by and by["idle"]["mb_per_100_connections"] is not None:
        v = by["idle"]["mb_per_100_connections"]
        out["idle_mb_per_100"] = {
            "value": v,
            "target": TARGETS["idle_mb_per_100"],
            "met": v < TARGETS["idle_mb_per_100"] and by["idle"]["held_open"] == by["idle"]["requested"],
            "held_open": by["idle"]["held_open"],
        }
    return out


def print_phase(p: dict) -> None:
    if p["name"] == "idle":
        print(
            f"[imap-bench]   idle: {p['held_open']}/{p['requested']} held in {p['open_s']}s; gateway RSS "
            f"+{p['rss_growth_mb']} MB = {p['mb_per_100_connections']} MB/100 conns; errors {p['error_count']}",
            flush=True,
        )
        return
    for cmd, s in p["commands"].items():
        print(
            f"[imap-bench]   {cmd:<14} {s['ops_per_s']:>8.0f}/s  p50 {s['p50_ms']:>7.1f} ms  p95 {s['p95_ms']:>7.1f} ms",
            flush=True,
        )
    if p["failures"] or p["error_count"]:
        print(f"[imap-bench]   failures {p['failures']} errors {p['errors'][:3]}", flush=True)


def print_summary(report: dict, out: Path) -> None:
    m = report["machine"]
    o = report["options"]
    print()
    print(
        f"WhyMail IMAP load benchmark ({m['nproc']} CPU {m['cpu_model']}, Python {m['python']}, Ray {m['ray']}, "
        f"PostgreSQL {m['postgres']})"
    )
    print(
        f"users={o['users']} messages/user={o['messages']} size={o['size']} sessions={o['sessions']} "
        f"duration={o['duration']}s idle={o['idle']}"
    )
    header = (
        f"{'phase':<6} {'command':<14} {'ops/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'MB/s':>7}"
    )
    print(header)
    print("-" * len(header))
    for p in report["phases"]:
        if p["name"] == "idle":
            continue
        for cmd, s in p["commands"].items():
            print(
                f"{p['name']:<6} {cmd:<14} {s['ops_per_s']:>8.0f} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} "
                f"{s['p99_ms']:>8.1f} {s['literal_mb_per_s']:>7.2f}"
            )
        cpu = ", ".join(f"{k} {v:.1f}s" for k, v in list(p["cpu_seconds"].items())[:5])
        print(
            f"       IMAP gateway CPU {p['imap_gateway_cpu_s']}s = {p['imap_gateway_cpu_share_of_one_core'] * 100:.0f}% "
            f"of one core; all ({p['cpu_window_s']}s window, ray-infra includes the gateway): {cpu}; "
            f"errors {p['error_count']}"
        )
    for p in report["phases"]:
        if p["name"] == "idle":
            print(
                f"idle: {p['held_open']}/{p['requested']} connections (LOGIN+SELECT+IDLE); gateway VmRSS "
                f"{p['gateway_status_kb_before'].get('VmRSS', 0) // 1024} -> "
                f"{p['gateway_status_kb_after_5s'].get('VmRSS', 0) // 1024} MB: {p['mb_per_100_connections']} MB per 100"
            )
    for key, v in report["verdict"].items():
        print(f"target {key}: {v['value']} vs {v['target']} -> {'MET' if v['met'] else 'NOT MET'}")
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
