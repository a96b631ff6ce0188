"""`whymail serve`: migrate, start Ray and the actors, run until Ctrl-C / SIGTERM, then drain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from pathlib import Path

import ray

from actors.cluster import start_actors, start_ray, stop_actors
from whymail.config import Config
from whymail.db.bootstrap import ensure_domains
from whymail.db.embedded import resolve_dsn
from whymail.db.migrate import migrate_up
from whymail.db.pool import connect
from whymail.logs import setup_logging
from whymail.runtime import Runtime
from whymail.tls import ensure_self_signed

log = logging.getLogger("whymail.serve")


async def _prepare_database(dsn: str, domains: list[str]) -> None:
    conn = await connect(dsn)
    try:
        for migration in await migrate_up(conn):
            log.info("applied migration %03d_%s", migration.version, migration.name)
        for name in await ensure_domains(conn, domains):
            log.info("created local domain %s", name)
    finally:
        await conn.close()


async def _check_redis(addr: str) -> bool:
    import redis.asyncio as redis

    host, _, port = addr.rpartition(":")
    client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=2)
    try:
        return bool(await client.ping())
    except Exception as exc:  # Redis is optional: fall back to in-process limits
        log.warning("redis at %s unreachable (%s): using in-process fallbacks", addr, exc)
        return False
    finally:
        await client.aclose()


def serve(config: Config, state_dir: Path, args: argparse.Namespace) -> int:
    """Run the server in the foreground; returns the exit code."""
    if args.shards:
        config.ray.shards = args.shards
    if args.dev:
        config.logging.json_format = False
    state_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(config.logging, component="serve", dev=args.dev, log_file=state_dir / "logs" / "whymail.log")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        dsn = resolve_dsn(config.db.dsn, state_dir, stop_on_exit=True)
        asyncio.run(_prepare_database(dsn, config.local_domains))
    except Exception as exc:
        log.error("database not usable: %s", exc)
        print(f"whymail: database not usable: {exc}")
        return 1
    redis_addr = config.redis.addr
    if redis_addr and not asyncio.run(_check_redis(redis_addr)):
        redis_addr = ""
    runtime = Runtime(config=config, state_dir=str(state_dir), dsn=dsn, redis_addr=redis_addr)
    runtime.maildir_root.mkdir(parents=True, exist_ok=True)
    if not (config.server.tls.cert_file and config.server.tls.key_file):
        # Made here, once, so that several gateways starting together do not race to write it.
        ensure_self_signed(state_dir / "tls", config.server.hostname)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    start_ray(args.address or config.ray.address, config.ray.namespace)
    # After ray.init, which installs handlers of its own: ours drain the gateways first.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster = start_actors(
        runtime, smtp_port=args.smtp_port, submission_port=args.submission_port, smtps_port=args.smtps_port,
        imap_port=args.imap_port, imaps_port=args.imaps_port, http_port=args.http_port,
    )
    smtp = config.server.smtp
    print(
        f"WhyMail ready: SMTP on {smtp.host}:{cluster.smtp_port} (submission {cluster.submission_port}, "
        f"SMTPS {cluster.smtps_port}), IMAP on {config.server.imap.host}:"
        f"{cluster.imap_port} (IMAPS {cluster.imaps_port}), HTTP on {config.server.http.host}:{cluster.http_port}, "
        f"{len(cluster.shard_names)} shard(s), "
        f"state in {state_dir}, domains: {', '.join(config.local_domains)}",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    stop_actors(cluster, grace=10.0)
    ray.shutdown()
    print("WhyMail stopped", flush=True)
    return 0
