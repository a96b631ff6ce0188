#!/usr/bin/env python
"""HTTP API benchmark (issue 6): keep-alive HTTP/1.1 clients -> HttpGateway (Sanic) -> PostgreSQL.
Targets with 50 connections: `GET /api/v1/mailboxes` >= 5,000 req/s, a message list
(`GET /api/v1/mailboxes/{id}/messages?limit=50`) >= 1,500 req/s, p95 under 20 ms for both.

Run as `make bench-http` (or `.venv/bin/python bench/http_api.py --help`). It builds the same
throw-away system as `bench/smtp_delivery.py` (whose helpers it imports):

1. a fresh PostgreSQL database `whymail_bench_<random>` (dropped at the end, also on Ctrl-C and errors)
   with the domain `bench.test` and `--users` users (bcrypt cost 4);
2. a local Ray with every actor (`actors.cluster.start_actors`, all ports ephemeral), fsync off so that
   the mail arrives quickly;
3. populate: `--messages` messages per user delivered to INBOX over pipelined SMTP, then a wait until
   the database holds them all;
4. `--connections` keep-alive connections, each logged in as one user (`POST /api/v1/auth/login`) and
   knowing its INBOX id, before the clock starts;
5. two timed phases of `--duration` seconds, `mailboxes` and `messages`: every connection sends its next
   request as soon as the previous answer is read (one request in flight per connection).

The client (`HttpClient`) is a small asyncio raw-stream HTTP/1.1 client on uvloop: status line,
headers, `Content-Length` or chunked bodies, reconnect on `Connection: close`.

The API's rate limits (per IP 6,000/min, per user 3,000/min) would answer 429 within a second, since
every connection comes from 127.0.0.1: the bench lifts them in the running gateway through
`__ray_call__` (`--keep-rate-limits` to measure with them), as the other benches raise the SMTP limits.

Output: a summary on stdout and the full JSON in `bench/results/http-<UTC stamp>.json`: req/s,
latency percentiles, status counts, CPU per process group and per thread of the HTTP gateway, the
share of the CPU other processes took, and whether each target is met. `--cprofile` adds a cProfile of
the gateway's event loop per phase. Exit code 0 = no errors and every answer 200, 2 = otherwise,
130 = interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
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

TARGET_REQ_PER_S = {"mailboxes": 5000, "messages": 1500}
TARGET_P95_MS = 20.0
PAGE_SIZE = 50


# --------------------------------------------------------------------------------------------------
# The client: one keep-alive HTTP/1.1 connection on raw asyncio streams
# --------------------------------------------------------------------------------------------------


class HttpError(Exception):
    """The connection cannot go on (closed, malformed answer)."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self):
        return json.loads(self.body)


class HttpClient:
    """One request in flight at a time on one connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def build(self, method: str, path: str, token: str = "", body: bytes = b"") -> bytes:
        """The bytes of a request; the timed loops build theirs once and send them again and again."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: application/json"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> Response:
        if self.writer is None:
            self.reconnects += 1
            await self.connect()
        self.writer.write(request)
        try:
            response = await self._read_response()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise HttpError(f"connection lost: {exc!r}") from exc
        if response.headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return response

    async def _read_response(self) -> Response:
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head[:-4].partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"malformed status line {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = await self._read_chunked()
        elif b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no length: the body runs until the server closes (RFC 9112 §6.3)
            body = await reader.read()
            headers[b"connection"] = b"close"
        return Response(status, headers, body)

    async def _read_chunked(self) -> bytes:
        reader = self.reader
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)  # chunk extensions are ignored
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the empty line
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.reader = self.writer = None


@dataclass(slots=True)
class Session:
    """A logged-in connection: its user, access token and INBOX."""

    client: HttpClient
    email: str
    token: str
    inbox_id: int
    inbox_total: int


async def open_session(port: int, email: str) -> Session:
    client = HttpClient("127.0.0.1", port)
    await client.connect()
    body = json.dumps({"email": email, "password": sd.PASSWORD}).encode()
    login = await client.send(client.build("POST", "/api/v1/auth/login", body=body))
    if login.status != 200:
        raise RuntimeError(f"login of {email}: {login.status} {login.body[:200]!r}")
    token = login.json()["access_token"]
    listing = await client.send(client.build("GET", "/api/v1/mailboxes", token))
    if listing.status != 200:
        raise RuntimeError(f"mailboxes of {email}: {listing.status} {listing.body[:200]!r}")
    inbox = next(m for m in listing.json() if m["name"].upper() == "INBOX")
    return Session(client, email, token, inbox["id"], inbox["total"])


# --------------------------------------------------------------------------------------------------
# Setup: mail for every user, delivered over pipelined SMTP
# --------------------------------------------------------------------------------------------------


async def populate(
    smtp_port: int, users: list[str], per_user: int, run_id: str, connections: int = 20
) -> None:
    factory = sd.MessageFactory("http", 2048, run_id)
    indexes = iter(range(per_user * len(users)))
    refused: Counter[str] = Counter()

    async def sender() -> None:
        client = sd.PipeliningClient("127.0.0.1", smtp_port, helo="bench-populate.example")
        await client.connect()
        try:
            for index in indexes:
                rcpt = users[index % len(users)]
                reply, stage = await client.send(sd.SENDER, rcpt, factory.message(index, rcpt))
                if reply.code != 250:
                    refused[f"{stage} {reply.code} {reply.text}"] += 1
        finally:
            await client.quit()

    await asyncio.gather(*(sender() for _ in range(connections)))
    if refused:
        raise RuntimeError(f"populate: refused deliveries {dict(refused)}")


def wait_for_counts(dsn: str, users: list[str], per_user: int, timeout: float = 60.0) -> None:
    """Until every user holds `per_user` messages in the database."""
    deadline = time.monotonic() + timeout
    while True:
        stored = asyncio.run(sd.stored_counts(dsn))
        short = {u: stored.get(u, 0) for u in users if stored.get(u, 0) != per_user}
        if not short:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(short)} users without {per_user} messages, e.g. {list(short.items())[:3]}"
            )
        time.sleep(0.2)


class _ExplainingConnection:
    """Stands in for an asyncpg connection: runs each query under EXPLAIN ANALYZE and keeps the plan."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.plans: list[list[str]] = []

    async def fetch(self, query: str, *args) -> list:
        rows = await self.conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query, *args)
        self.plans.append([row[0] for row in rows])
        return []


async def explain_reads(dsn: str, email: str) -> dict[str, list[str]]:
    """The plans of the two timed reads for one user, from the API's own query functions."""
    import asyncpg

    from whymail.api import mail_queries
    from whymail.db import mailbox_queries

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        user_id, inbox_id = await conn.fetchrow(
            "SELECT u.id, b.id FROM users u JOIN mailboxes b ON b.user_id = u.id AND b.name = 'INBOX' "
            "WHERE u.email = $1",
            email,
        )
        await conn.execute("ANALYZE messages")
        explaining = _ExplainingConnection(conn)
        await mailbox_queries.list_mailboxes(explaining, user_id)
        await mail_queries.list_messages(
            explaining,
            user_id,
            inbox_id,
            mail_queries.MessageFilter(),
            descending=True,
            after=None,
            limit=PAGE_SIZE,
        )
        return {"mailboxes": explaining.plans[0], "messages": explaining.plans[1]}
    finally:
        await conn.close()


def wait_until_idle(pids: dict[str, int], timeout: float = 90.0, busy: float = 0.05) -> dict[str, float]:
    """Until none of `pids` uses more than `busy` of a core over a second (the NotificationHub works
    through the populate's events for a while), so that it does not compete with the first phase."""
    deadline = time.monotonic() + timeout
    while True:
        before = {label: (sd._read_proc(pid) or ("", 0, 0.0))[2] for label, pid in pids.items()}
        time.sleep(1.0)
        used = {label: (sd._read_proc(pid) or ("", 0, 0.0))[2] - before[label] for label, pid in pids.items()}
        if max(used.values()) <= busy or time.monotonic() > deadline:
            return {label: round(cpu, 2) for label, cpu in used.items()}


# --------------------------------------------------------------------------------------------------
# A timed phase
# --------------------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    path_example: str
    connections: int
    duration_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    non_200_samples: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    response_bytes: int = 0
    check: dict = field(default_factory=dict)


def request_path(phase: str, session: Session) -> str:
    if phase == "mailboxes":
        return "/api/v1/mailboxes"
    return f"/api/v1/mailboxes/{session.inbox_id}/messages?limit={PAGE_SIZE}"


def check_body(phase: str, session: Session, response: Response, per_user: int) -> str | None:
    """What is wrong with a 200 answer's content, or None (checked on each connection's first answer)."""
    data = response.json()
    if phase == "mailboxes":
        inbox = next((m for m in data if m["id"] == session.inbox_id), None)
        if inbox is None or inbox["total"] != per_user:
            return f"{session.email}: INBOX {inbox!r}, expected total {per_user}"
    elif len(data["messages"]) != min(PAGE_SIZE, per_user):
        return f"{session.email}: {len(data['messages'])} messages in a page, expected {min(PAGE_SIZE, per_user)}"
    return None


async def run_phase(phase: str, sessions: list[Session], duration: float, per_user: int) -> PhaseResult:
    result = PhaseResult(phase, request_path(phase, sessions[0]), len(sessions))
    clock = time.perf_counter
    latencies, completions, statuses = result.latencies, result.completions, result.statuses
    wrong: list[str] = []

    async def worker(session: Session) -> None:
        client = session.client
        request = client.build("GET", request_path(phase, session), session.token)
        first = True
        while clock() < deadline:
            started = clock()
            try:
                response = await client.send(request)
            except (HttpError, OSError) as exc:
                statuses["(connection lost)"] += 1
                if len(result.errors) < 20:
                    result.errors.append(f"{session.email}: {exc!r}")
                await asyncio.sleep(0.05)
                continue
            done = clock()
            latencies.append(done - started)
            completions.append(done)
            statuses[response.status] += 1
            result.response_bytes += len(response.body)
            if response.status != 200:
                result.non_200_samples.setdefault(
                    response.status, response.body[:300].decode("utf-8", "replace")
                )
            elif first:
                first = False
                problem = check_body(phase, session, response, per_user)
                if problem:
                    wrong.append(problem)

    start = clock()
    deadline = start + duration
    outcomes = await asyncio.gather(*(worker(s) for s in sessions), return_exceptions=True)
    result.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    result.duration_s = clock() - start
    result.completions = [t - start for t in completions]
    result.check = {"connections_checked": len(sessions), "wrong_content": wrong[:10], "ok": not wrong}
    return result


def summarize(
    result: PhaseResult, cpu: dict[str, float], foreign: list, window_s: float, threads: dict
) -> dict:
    lat = sorted(result.latencies)
    done = len(lat)
    ok = result.statuses.get(200, 0)
    rate = ok / result.duration_s if result.duration_s else 0.0
    ms = 1000.0
    latency = {
        "p50": round(sd.percentile(lat, 50) * ms, 2),
        "p95": round(sd.percentile(lat, 95) * ms, 2),
        "p99": round(sd.percentile(lat, 99) * ms, 2),
        "max": round(lat[-1] * ms, 2) if lat else 0.0,
        "mean": round(sum(lat) / done * ms, 2) if done else 0.0,
    }
    per_second = Counter(int(t) for t in result.completions)
    ncpu = os.cpu_count() or 1
    return {
        "name": result.name,
        "request": f"GET {result.path_example}",
        "connections": result.connections,
        "duration_s": round(result.duration_s, 3),
        "requests": done,
        "requests_200": ok,
        "req_per_s": round(rate, 1),
        "latency_ms": latency,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "non_200": sum(v for k, v in result.statuses.items() if k != 200),
        "non_200_samples": {str(k): v for k, v in result.non_200_samples.items()},
        "errors": result.errors,
        "avg_response_bytes": round(result.response_bytes / done) if done else 0,
        "content_check": result.check,
        "target": {
            "req_per_s": TARGET_REQ_PER_S[result.name],
            "p95_ms": TARGET_P95_MS,
            "req_per_s_met": rate >= TARGET_REQ_PER_S[result.name],
            "p95_met": latency["p95"] < TARGET_P95_MS,
        },
        "cpu_seconds": cpu,
        "cpu_window_s": round(window_s, 3),
        "cpu_ms_per_request": {k: round(1000.0 * v / max(ok, 1), 3) for k, v in cpu.items()},
        "cpu_utilisation_of_machine": round(sum(cpu.values()) / (window_s * ncpu), 3),
        "foreign_cpu_share": round(cpu.get("foreign", 0.0) / (window_s * ncpu), 3),
        "top_foreign_processes": foreign,
        "threads_cpu_user_system": threads,
        "throughput_per_second": [
            per_second.get(s, 0) for s in range(int(max(result.completions, default=0)) + 1)
        ],
    }


# --------------------------------------------------------------------------------------------------
# Reaching into the running gateway through __ray_call__ (bench only; nothing under whymail/ changes)
# --------------------------------------------------------------------------------------------------


def _lift_rate_limits(actor: object) -> dict:
    from whymail.api.ratelimit import Limit, RateLimits

    limiter = actor._app.ctx.api.rate_limiter
    before = limiter.limits
    unlimited = Limit(1e12, 1e12)
    limiter.limits = RateLimits(
        ip=unlimited, user=unlimited, endpoints=dict.fromkeys(before.endpoints, unlimited)
    )
    return {
        "ip": [before.ip.per_minute, before.ip.burst],
        "user": [before.user.per_minute, before.user.burst],
        **{name: [lim.per_minute, lim.burst] for name, lim in before.endpoints.items()},
    }


def _thread_names(_actor: object) -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def _gateway_loop(actor: object) -> asyncio.AbstractEventLoop:
    return actor._started.get_loop()  # the task its constructor put on the actor's event loop


def _cprofile_start(actor: object) -> None:
    import cProfile

    actor._bench_cprofile = cProfile.Profile()
    # cProfile records the thread that enables it: enable it on the event loop.
    _gateway_loop(actor).call_soon_threadsafe(actor._bench_cprofile.enable)


def _cprofile_stop(actor: object, path: str) -> None:
    profiler = actor._bench_cprofile

    def stop() -> None:
        profiler.disable()
        profiler.dump_stats(path + ".part")
        os.replace(path + ".part", path)  # the bench waits for the name: never let it read half a file

    _gateway_loop(actor).call_soon_threadsafe(stop)


def print_cprofile(path: Path, top: int = 25) -> None:
    import pstats

    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not path.exists():
        print(f"[bench] no cProfile written at {path}")
        return
    buffer = io.StringIO()
    pstats.Stats(str(path), stream=buffer).sort_stats("tottime").print_stats(top)
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    print(f"\n--- cProfile of the HTTP gateway's event loop: {path.name} (by own time) ---")
    print("\n".join(lines[start:]))


def cpu_groups(before: sd.ProcSnapshot, after: sd.ProcSnapshot, db_name: str, labels: dict[int, str]):
    """CPU seconds per group between two snapshots (our labels first, then `smtp_delivery.classify`)."""
    groups: Counter[str] = Counter()
    foreign: Counter[str] = Counter()
    mine = before.mine | after.mine
    for pid, (cmd, _ppid, cpu) in after.procs.items():
        prev = before.procs.get(pid)
        used = cpu - (prev[2] if prev is not None and prev[0] == cmd else 0.0)
        if used <= 0:
            continue
        group = labels.get(pid) or sd.classify(pid, cmd, mine, db_name)
        if group == "ray-infra" and cmd.startswith("ray::"):  # another of our actors: name it
            group = cmd.split()[0].split(":")[-1].split(".")[0]
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
    parser.add_argument(
        "--users", type=int, default=50, help="users (connection i logs in as user i mod users)"
    )
    parser.add_argument("--messages", type=int, default=200, help="messages in each user's INBOX")
    parser.add_argument(
        "--connections", type=int, default=50, help="keep-alive connections, one request each"
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per timed phase")
    parser.add_argument("--db-pool", type=int, default=0,
                        help="server.http.db_pool of the HTTP gateway (default: the config's, 20)")
    parser.add_argument("--phases", default="mailboxes,messages", help="comma-separated: mailboxes, messages")
    parser.add_argument("--shards", type=int, default=2, help="MailboxShard actors")
    parser.add_argument(
        "--keep-rate-limits", action="store_true", help="measure with the API's per-IP/per-user limits (429s)"
    )
    parser.add_argument(
        "--cprofile", action="store_true", help="cProfile the gateway's event loop (slows it)"
    )
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("WHYMAIL_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument("--log-level", default="WARNING", help="server log level (INFO logs every request)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="client event loop")
    parser.add_argument("--tmp-dir", default=None, help="parent of the temporary state directory")
    parser.add_argument("--results-dir", default=str(BENCH_DIR / "results"), help="where the JSON goes")
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.phases or set(args.phases) - set(TARGET_REQ_PER_S):
        parser.error(f"--phases: choose from {', '.join(TARGET_REQ_PER_S)}")
    if min(args.users, args.messages, args.connections) < 1 or args.duration <= 0:
        parser.error("--users, --messages, --connections and --duration must be positive")
    return args


def server_env(args: argparse.Namespace, run_id: str) -> dict[str, str]:
    return {
        "WHYMAIL__SERVER__HOSTNAME": sd.HOSTNAME,
        "WHYMAIL__RAY__SHARDS": str(args.shards),
        "WHYMAIL__RAY__NAMESPACE": f"whymail-httpbench-{run_id}",
        "WHYMAIL__LOGGING__LEVEL": args.log_level.upper(),
        "WHYMAIL__LIMITS__COMMANDS_PER_MINUTE": "100000000",  # populate comes from 127.0.0.1
        "WHYMAIL__STORAGE__FSYNC": "false",  # populate fast; the API only reads
        **({"WHYMAIL__SERVER__HTTP__DB_POOL": str(args.db_pool)} if args.db_pool else {}),
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
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    db_created = ray_started = False
    cluster = None
    exit_code = 1
    try:
        print(f"[bench] database {db_name}, state dir {state_dir}", flush=True)
        pg_version = asyncio.run(sd.create_database(args.admin_dsn, db_name))
        db_created = True
        asyncio.run(sd.migrate(dsn))
        users = asyncio.run(sd.create_users(dsn, args.users))

        import ray

        from actors.cluster import start_actors, start_ray, stop_actors
        from whymail.config import load_config
        from whymail.runtime import Runtime

        config = load_config(None, env=server_env(args, run_id))
        runtime = Runtime(config=config, state_dir=str(state_dir), dsn=dsn)
        runtime.maildir_root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        start_ray("", config.ray.namespace)
        ray_started = True
        signal.signal(signal.SIGTERM, sd._raise_keyboard_interrupt)  # ray.init installs its own
        cluster = start_actors(
            runtime, smtp_port=0, submission_port=0, smtps_port=0, imap_port=0, imaps_port=0, http_port=0
        )
        gateway = cluster.http_gateways[0]
        print(
            f"[bench] Ray + actors up in {time.monotonic() - t0:.1f}s; HTTP on 127.0.0.1:{cluster.http_port}",
            flush=True,
        )
        ray.get(cluster.smtp_gateways[0].wait_directory_version.remote(1, 10.0))
        sd._run(sd.wait_for_users(cluster.smtp_port, users), args.loop)

        t0 = time.monotonic()
        sd._run(populate(cluster.smtp_port, users, args.messages, run_id), args.loop)
        wait_for_counts(dsn, users, args.messages)
        populate_s = time.monotonic() - t0
        print(
            f"[bench] {args.users} users x {args.messages} messages stored in {populate_s:.1f}s", flush=True
        )

        plans = asyncio.run(explain_reads(dsn, users[0]))
        rate_limits = None
        if not args.keep_rate_limits:
            rate_limits = ray.get(gateway.__ray_call__.remote(_lift_rate_limits), timeout=30)
        gateway_pid = ray.get(gateway.__ray_call__.remote(sd._own_pid), timeout=30)
        pids = sd.actor_pids(cluster)
        labels = {gateway_pid: "http-gateway", os.getpid(): "client+driver", pids["gateway"]: "smtp-gateway"}
        labels.update({pid: "shards" for pid in pids["shards"].values()})
        hub_pid = ray.get(cluster.hub.__ray_call__.remote(sd._own_pid), timeout=30)
        labels[hub_pid] = "notification-hub"
        t0 = time.monotonic()
        settled = wait_until_idle(
            {"notification-hub": hub_pid, **pids["shards"], "http-gateway": gateway_pid}
        )
        print(f"[bench] actors idle after {time.monotonic() - t0:.1f}s (CPU in the last second: {settled})")
        machine = sd.machine_info(pg_version, state_dir)
        report_phases = run_phases(
            args, cluster.http_port, users, gateway, gateway_pid, labels, db_name, stamp
        )
        report = {
            "benchmark": "http_api",
            "started_at": started_at.isoformat(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "options": vars(args),
            "server_config": {
                "shards": config.ray.shards,
                "http_gateways": len(cluster.http_gateways),
                "db_pool": [config.db.min_pool, config.db.max_pool],
                "log_level": config.logging.level,
                "rate_limits_lifted_from": rate_limits,
            },
            "populate_s": round(populate_s, 1),
            "machine": machine,
            "pids": {"http_gateway": gateway_pid, **pids},
            "phases": report_phases,
            "query_plans": plans,
            "targets": {"req_per_s": TARGET_REQ_PER_S, "p95_ms": TARGET_P95_MS},
        }
        out = results_dir / f"http-{stamp}.json"
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print_summary(report, out)
        clean = all(not p["errors"] and not p["non_200"] and p["content_check"]["ok"] for p in report_phases)
        exit_code = 0 if clean else 2
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
                    asyncio.run(sd.drop_database(args.admin_dsn, db_name))
                except Exception as exc:
                    print(f"[bench] could not drop database {db_name}: {exc!r}", file=sys.stderr)
            shutil.rmtree(state_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return exit_code


def run_phases(
    args,
    port: int,
    users: list[str],
    gateway,
    gateway_pid: int,
    labels: dict[int, str],
    db_name: str,
    stamp: str,
) -> list[dict]:
    """Log the connections in, then run each timed phase on one event loop (the sessions live across phases)."""

    async def all_phases() -> list[dict]:
        sessions = await asyncio.gather(
            *(open_session(port, users[i % len(users)]) for i in range(args.connections))
        )
        print(f"[bench] {len(sessions)} connections logged in", flush=True)
        try:
            return [
                await measure_phase(args, phase, sessions, gateway, gateway_pid, labels, db_name, stamp)
                for phase in args.phases
            ]
        finally:
            for session in sessions:
                session.client.close()

    return sd._run(all_phases(), args.loop)


async def measure_phase(
    args,
    phase: str,
    sessions: list[Session],
    gateway,
    gateway_pid: int,
    labels: dict[int, str],
    db_name: str,
    stamp: str,
) -> dict:
    """One timed phase with the CPU snapshots around it. The snapshots and Ray calls block the loop, but
    only outside the timed window."""
    import ray

    names = ray.get(gateway.__ray_call__.remote(_thread_names), timeout=30)
    profile = Path(args.results_dir) / f"cprofile-http-{stamp}" / f"{phase}.pstats" if args.cprofile else None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        ray.get(gateway.__ray_call__.remote(_cprofile_start), timeout=30)
    print(f"[bench] phase {phase}: {len(sessions)} connections for {args.duration:.0f}s ...", flush=True)
    threads_before = sd.thread_snapshot([gateway_pid])
    cpu_before = sd.cpu_snapshot()
    window = time.perf_counter()
    result = await run_phase(phase, sessions, args.duration, args.messages)
    cpu_after = sd.cpu_snapshot()
    window = time.perf_counter() - window
    threads_after = sd.thread_snapshot([gateway_pid])
    names.update(ray.get(gateway.__ray_call__.remote(_thread_names), timeout=30))  # pools start lazily
    if profile is not None:
        ray.get(gateway.__ray_call__.remote(_cprofile_stop, str(profile)), timeout=30)
    cpu, foreign = cpu_groups(cpu_before, cpu_after, db_name, labels)
    threads = sd.threads_by_name(threads_before, threads_after, {gateway_pid: "http-gateway"}, names)
    summary = summarize(result, cpu, foreign, window, threads.get("http-gateway", {}))
    lat = summary["latency_ms"]
    print(
        f"[bench]   {summary['req_per_s']:.0f} req/s, p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
        f"non-200 {summary['non_200']}",
        flush=True,
    )
    if profile is not None:
        summary["cprofile"] = str(profile)
        print_cprofile(profile)
    return summary


def print_summary(report: dict, out: Path) -> None:
    m = report["machine"]
    o = report["options"]
    print()
    print(
        f"WhyMail HTTP API benchmark  ({m['nproc']} CPU {m['cpu_model']}, Python {m['python']}, "
        f"Ray {m['ray']}, PostgreSQL {m['postgres']})"
    )
    lifted = report["server_config"]["rate_limits_lifted_from"]
    print(
        f"connections={o['connections']} users={o['users']} messages/user={o['messages']} "
        f"duration={o['duration']:.0f}s rate limits {'lifted' if lifted else 'kept'}"
    )
    header = (
        f"{'phase':<10} {'requests':>9} {'req/s':>8} {'target':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'non-200':>7}  verdict"
    )
    print(header)
    print("-" * len(header))
    for p in report["phases"]:
        t = p["target"]
        lat = p["latency_ms"]
        verdict = "met" if t["req_per_s_met"] and t["p95_met"] else "NOT met"
        misses = [name for name, ok in (("req/s", t["req_per_s_met"]), ("p95", t["p95_met"])) if not ok]
        print(
            f"{p['name']:<10} {p['requests']:>9} {p['req_per_s']:>8.0f} {t['req_per_s']:>7} {lat['p50']:>7.1f} "
            f"{lat['p95']:>7.1f} {lat['p99']:>7.1f} {lat['max']:>7.1f} {p['non_200']:>7}  "
            f"{verdict}{' (' + ', '.join(misses) + ')' if misses else ''}"
        )
    for p in report["phases"]:
        cpu = ", ".join(f"{k} {v:.1f}s" for k, v in p["cpu_seconds"].items())
        ours = sum(v for k, v in p["cpu_ms_per_request"].items() if k != "foreign")
        print(
            f"cpu {p['name']}: {cpu}  (machine {p['cpu_utilisation_of_machine'] * 100:.0f}% busy; "
            f"{ours:.2f} ms of CPU per request, foreign excluded)"
        )
        threads = p["threads_cpu_user_system"]
        top = ", ".join(f"{n} {u + s:.1f}s" for n, (u, s) in list(threads.items())[:4])
        print(f"  http-gateway threads: {top}")
        if p["foreign_cpu_share"] > 0.05:
            print(
                f"  WARNING: the machine was shared: {p['foreign_cpu_share'] * 100:.0f}% of all CPU went to other "
                f"processes ({', '.join(name for name, _ in p['top_foreign_processes'][:3])}); "
                "these numbers are pessimistic"
            )
        if p["non_200"]:
            print(f"  non-200 in {p['name']}: {p['statuses']} e.g. {p['non_200_samples']}")
        if p["errors"]:
            print(f"  errors in {p['name']}: {p['errors'][:5]}")
        if not p["content_check"]["ok"]:
            print(f"  wrong content in {p['name']}: {p['content_check']['wrong_content'][:3]}")
    for name, plan in report.get("query_plans", {}).items():
        print(
            f"plan of the {name} query (EXPLAIN ANALYZE, one user): "
            + " | ".join(line.strip() for line in plan[:4])
        )
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
