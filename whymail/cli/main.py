"""`whymail`: run the server (`serve`), manage the schema (`migrate up|down|status`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from whymail.config import Config, ConfigError, load_config, resolve_state_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whymail", description="WhyMail mail server")
    parser.add_argument("-c", "--config", help="YAML configuration file (default: built-in defaults)")
    parser.add_argument("--state-dir", help="state directory (default: $WHYMAIL_STATE_DIR or ~/.local/share/whymail)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--dev", action="store_true", help="verbose, human-readable logs")
    serve.add_argument("--address", help="attach to a running Ray cluster ('auto' or host:port)")
    serve.add_argument("--shards", type=int, help="number of MailboxShard actors (overrides ray.shards)")
    serve.add_argument("--smtp-port", type=int, help="inbound SMTP port (overrides server.smtp.port; 0: any)")
    serve.add_argument("--http-port", type=int, help="HTTP API port (overrides server.http.port; 0: any)")
    serve.add_argument("--submission-port", type=int, help="submission port (server.smtp.submission_port; 0: any)")
    serve.add_argument("--smtps-port", type=int, help="implicit-TLS submission port (server.smtp.smtps_port; 0: any)")
    serve.add_argument("--imap-port", type=int, help="IMAP port (overrides server.imap.port; 0: any)")
    serve.add_argument("--imaps-port", type=int, help="IMAPS port (overrides server.imap.imaps_port; 0: any)")

    migrate = sub.add_parser("migrate", help="apply or revert schema migrations")
    migrate.add_argument("action", choices=["up", "down", "status"])
    migrate.add_argument("--steps", type=int, default=1, help="how many migrations `down` reverts (default 1)")

    check = sub.add_parser("config", help="validate the configuration and print it")
    check.add_argument("action", choices=["check", "show"])
    return parser


def load_or_exit(path: str | None, prog: str) -> Config:
    """The validated config, or one line on stderr and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _migrate(dsn: str, action: str, steps: int) -> int:
    from whymail.db import migrate
    from whymail.db.pool import connect

    conn = await connect(dsn)
    try:
        if action == "up":
            applied = await migrate.migrate_up(conn)
            for m in applied:
                print(f"applied {m.version:03d}_{m.name}")
            print(f"{len(applied)} migration(s) applied" if applied else "schema is up to date")
        elif action == "down":
            reverted = await migrate.migrate_down(conn, steps=steps)
            for m in reverted:
                print(f"reverted {m.version:03d}_{m.name}")
            print(f"{len(reverted)} migration(s) reverted")
        else:
            for st in await migrate.status(conn):
                print(f"{st.version:03d}_{st.name:<30} {'applied' if st.applied else 'pending'}")
    finally:
        await conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_or_exit(args.config, "whymail")
    state_dir = resolve_state_dir(args.state_dir, config)
    if args.command == "config":
        if args.action == "show":
            print(config.model_dump_json(indent=2))
        else:
            print("configuration is valid")
        return 0
    if args.command == "serve":
        # The server lives in the Ray layer; whymail/ itself never imports ray (DESIGN.md layers).
        serve = importlib.import_module("actors.serve")
        return serve.serve(config, state_dir, args)
    from whymail.db.embedded import resolve_dsn
    from whymail.db.migrate import MigrationError

    try:
        dsn = resolve_dsn(config.db.dsn, state_dir, stop_on_exit=False)
        return asyncio.run(_migrate(dsn, args.action, args.steps))
    except MigrationError as exc:
        print(f"whymail: migration failed: {exc}", file=sys.stderr)
        return 1
    except (TimeoutError, OSError) as exc:
        print(f"whymail: cannot reach the database: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
