"""`whymailctl`: manage domains, users, aliases, DKIM keys and the outbound queue in the database.

It calls the same directory service functions as the REST API, so the rules and messages are the
same; a running server picks the change up through the `whymail_directory` NOTIFY triggers.

Exit status: 0 done, 1 the operation failed (not found, already exists, database unreachable),
2 the command line, the input or the configuration is wrong. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

PROG = "whymailctl"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[Any, argparse.Namespace], Awaitable[None]]


class UsageError(Exception):
    """The command line or the input is wrong (exit 2)."""


class OperationError(Exception):
    """The command could not be carried out (exit 1)."""


# --- sizes ---------------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from `500M`, `1G`, `1.5G`, `2048` or `0`/`unlimited` (K/M/G/T are powers of 1024)."""
    if text.strip().lower() in ("unlimited", "none"):
        return 0
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"invalid size {text!r}: use a size such as 500M, 1G, or 0 for unlimited")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value > 2**63 - 1:
        raise ValueError(f"invalid size {text!r}: too large")
    return value


def _quota_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("size", "quota", 1)) from None


def format_size(value: int) -> str:
    """`1 GiB`, `1.5 GiB`, `512 B`: a byte count for people."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor:
            amount = value / factor
            return f"{amount:.0f} {unit}" if value % factor == 0 else f"{amount:.1f} {unit}"
    return f"{value} B"


def _quota_text(quota_bytes: int) -> str:
    return "unlimited" if quota_bytes == 0 else format_size(quota_bytes)


# --- output --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), ensure_ascii=False, indent=2))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _report(args: argparse.Namespace, result: Any, text: str) -> None:
    """Print the changed object as JSON with --json, else one sentence."""
    if args.json:
        _print_json(result)
    else:
        print(text)


def _status(active: bool) -> str:
    return "active" if active else "disabled"


# --- command handlers ----------------------------------------------------------------------------
# Imported lazily: `whymailctl --help` and usage errors stay fast and need no database driver.


async def _domain_add(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    info = await service.add_domain(conn, args.domain)
    _report(args, info, f"added domain {info.name}")


async def _domain_list(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    domains = await service.list_domains(conn)
    if args.json:
        _print_json(domains)
        return
    _print_table(
        ("DOMAIN", "STATUS", "USERS", "ALIASES"),
        [(d.name, _status(d.is_active), str(d.user_count), str(d.alias_count)) for d in domains],
    )


async def _domain_delete(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    try:
        info = await service.delete_domain(conn, args.domain, force=args.force)
    except service.Conflict as exc:
        raise service.Conflict(f"{exc}, or use --force to delete them with the domain") from None
    if args.json:
        _print_json(info)
        return
    print(f"deleted domain {info.name} ({info.user_count} users, {info.alias_count} aliases)")
    if info.user_count:
        print(f"note: the Maildir files under {args.maildir_root / info.name} were not removed")


async def _user_add(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    user = await service.add_user(
        conn,
        args.email,
        args.password_hash,
        display_name=args.name,
        quota_bytes=args.quota,
        role=args.role,
    )
    if args.json:
        _print_json(user)
        return
    mailboxes = ", ".join(name for name, _ in service.DEFAULT_MAILBOXES)
    print(f"added user {user.email} (quota {_quota_text(user.quota_bytes)}; mailboxes {mailboxes})")


async def _user_list(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    users = await service.list_users(conn, args.domain)
    if args.json:
        _print_json(users)
        return
    _print_table(
        ("EMAIL", "NAME", "ROLE", "STATUS", "QUOTA", "USED", "MESSAGES"),
        [
            (
                u.email,
                u.display_name,
                u.role,
                _status(u.is_active),
                _quota_text(u.quota_bytes),
                format_size(u.storage_used),
                str(u.message_count),
            )
            for u in users
        ],
    )


async def _user_delete(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    user = await service.delete_user(conn, args.email)
    if args.json:
        _print_json(user)
        return
    print(f"deleted user {user.email}")
    print(
        f"note: the Maildir files under {args.maildir_root / user.domain / user.local_part} were not removed"
    )


async def _user_password(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    user = await service.set_password(conn, args.email, args.password_hash)
    _report(args, user, f"changed the password of {user.email}")


async def _user_quota(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    user = await service.set_quota(conn, args.email, args.size)
    _report(args, user, f"set the quota of {user.email} to {_quota_text(user.quota_bytes)}")


async def _user_enable(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    user = await service.set_enabled(conn, args.email, True)
    _report(args, user, f"enabled {user.email}")


async def _user_disable(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    user = await service.set_enabled(conn, args.email, False)
    _report(args, user, f"disabled {user.email}")


async def _domain_dkim(conn: Any, args: argparse.Namespace) -> None:
    import datetime as dt

    from whymail.db.dkim_keys import activate_key, store_key
    from whymail.directory.addresses import normalize_domain
    from whymail.mailauth.dkim import dns_txt_record, generate_key

    domain = normalize_domain(args.domain)
    if args.activate:
        try:
            algorithm = await activate_key(conn, domain, args.activate.lower())
        except LookupError as exc:
            raise OperationError(str(exc)) from None
        _report(args, {"domain": domain, "selector": args.activate.lower(), "algorithm": algorithm,
                       "active": True},
                f"{domain} now signs with selector {args.activate.lower()} ({algorithm}) within a minute")
        return
    selector = (args.selector or f"wm{dt.datetime.now(dt.UTC):%Y%m}").lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", selector):
        raise UsageError(f"invalid selector {selector!r}: one DNS label of letters, digits and '-'")
    private_pem, public_b64 = await asyncio.to_thread(generate_key, args.algorithm, args.bits)
    try:
        active = await store_key(conn, domain, selector, args.algorithm, private_pem, public_b64, activate=args.now)
    except LookupError as exc:
        raise OperationError(str(exc)) from None
    except ValueError as exc:
        raise OperationError(f"{exc}; choose another --selector") from None
    record = dns_txt_record(selector, domain, args.algorithm, public_b64)
    if args.json:
        _print_json({"domain": domain, "selector": selector, "algorithm": args.algorithm,
                     "public_key": public_b64, "dns_record": record, "active": active})
        return
    print(f"new {args.algorithm} DKIM key for {domain}, selector {selector}. Publish this DNS record:")
    print()
    print(record)
    print()
    if active:
        print("Outbound mail of the domain is signed with it within a minute.")
    else:
        print(f"The current key keeps signing until the record is published and you run:\n"
              f"  whymailctl domain dkim {domain} --activate {selector}")


_QUEUE_STATES = ("pending", "sending", "deferred", "sent", "failed", "dead")


def _queue_ids(values: list[str]) -> list[int]:
    try:
        ids = [int(v) for v in values]
    except ValueError:
        raise UsageError("queue ids are numbers (see `whymailctl queue list`)") from None
    if any(i <= 0 for i in ids):
        raise UsageError("queue ids are positive numbers")
    return ids


async def _queue_list(conn: Any, args: argparse.Namespace) -> None:
    from whymail.queue import store

    statuses = None
    if args.status:
        statuses = [s.strip() for s in args.status.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in _QUEUE_STATES]
        if unknown:
            raise UsageError(f"unknown status {unknown[0]!r}: use {', '.join(_QUEUE_STATES)}")
    entries = await store.list_entries(conn, statuses=statuses, limit=args.limit)
    if args.json:
        _print_json([store.as_json(e) for e in entries])
        return
    counts = await store.counts_by_status(conn)
    _print_table(
        ("ID", "STATUS", "ATTEMPTS", "NEXT", "FROM", "TO", "LAST ERROR"),
        [
            (str(e.id), e.status, str(e.attempts),
             e.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") if e.status in ("pending", "deferred") else "-",
             e.sender or "<>", ",".join(e.recipients)[:60], (e.last_error or "")[:70])
            for e in entries
        ],
    )
    print(" ".join(f"{state}={counts.get(state, 0)}" for state in _QUEUE_STATES))


async def _queue_retry(conn: Any, args: argparse.Namespace) -> None:
    from whymail.queue import store

    ids = _queue_ids(args.ids)
    done = await store.retry_entries(conn, ids, lifetime=args.app_config.queue.max_lifetime)
    missing = sorted(set(ids) - set(done))
    _report(args, {"retried": done, "not_retried": missing},
            f"retrying {len(done)} entr{'y' if len(done) == 1 else 'ies'} now" if done else "nothing to retry")
    if missing:
        raise OperationError(f"not found or being sent right now: {', '.join(map(str, missing))}")


async def _queue_delete(conn: Any, args: argparse.Namespace) -> None:
    from whymail.queue import store

    ids = _queue_ids(args.ids)
    done = await store.delete_entries(conn, ids)
    missing = sorted(set(ids) - set(done))
    _report(args, {"deleted": done, "not_deleted": missing}, f"deleted {len(done)} entr{'y' if len(done) == 1 else 'ies'}")
    if missing:
        raise OperationError(f"not found or being sent right now: {', '.join(map(str, missing))}")


def _alias_kind(source: str) -> str:
    return "catch-all" if source.startswith("@") else "alias"


async def _alias_add(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    # Destinations may be given as separate arguments or comma-separated, or both.
    destinations = [part.strip() for arg in args.destinations for part in arg.split(",") if part.strip()]
    alias = await service.add_alias(conn, args.source, destinations)
    if args.json:
        _print_json(alias)
        return
    print(f"added {_alias_kind(alias.source)} {alias.source} -> {', '.join(alias.destinations)}")


async def _alias_list(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    aliases = await service.list_aliases(conn, args.domain)
    if args.json:
        _print_json([{**asdict(a), "is_catch_all": a.is_catch_all} for a in aliases])
        return
    _print_table(
        ("SOURCE", "DESTINATIONS", "STATUS"),
        [
            (
                a.source + (" (catch-all)" if a.is_catch_all else ""),
                ", ".join(a.destinations),
                _status(a.is_active),
            )
            for a in aliases
        ],
    )


async def _alias_delete(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    alias = await service.delete_alias(conn, args.source)
    _report(args, alias, f"deleted {_alias_kind(alias.source)} {alias.source}")


# --- argument parsing ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one line and exit status 2, rendered by `main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix(PROG + ' ')}: {message}" if self.prog != PROG else message)


def _common_options(suppress: bool) -> _Parser:
    """-c/--state-dir/--json, accepted before the command and (for convenience) after it."""
    default = argparse.SUPPRESS
    parser = _Parser(add_help=False)
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default if suppress else None,
        help="configuration file (YAML)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=default if suppress else None,
        help="state directory (embedded DB)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default if suppress else False, help="machine-readable output"
    )
    return parser


def _password_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (first line) instead of prompting",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line of `whymailctl`."""
    common = _common_options(suppress=True)
    parser = _Parser(
        prog=PROG,
        description="Manage WhyMail domains, users and aliases.",
        parents=[_common_options(suppress=False)],
    )
    groups = parser.add_subparsers(dest="group", metavar="{domain,user,alias,queue}", required=True)

    def command(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    domain = groups.add_parser("domain", help="local domains").add_subparsers(
        dest="action", metavar="{add,list,delete,dkim}", required=True
    )
    sub = command(domain, "add", _domain_add, "add a local domain")
    sub.add_argument("domain", metavar="DOMAIN")
    command(domain, "list", _domain_list, "list the domains")
    sub = command(domain, "delete", _domain_delete, "delete a domain and its aliases")
    sub.add_argument("domain", metavar="DOMAIN")
    sub.add_argument("--force", action="store_true", help="also delete the domain's users and their mail")
    sub = command(domain, "dkim", _domain_dkim, "generate a DKIM signing key and print its DNS record")
    sub.add_argument("domain", metavar="DOMAIN")
    sub.add_argument("--selector", help="DNS selector (default: wmYYYYMM)")
    sub.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa", help="key type (default: rsa)")
    sub.add_argument("--bits", type=int, choices=(1024, 2048, 3072, 4096), default=2048, help="RSA key size")
    sub.add_argument("--now", action="store_true", help="sign with the new key at once (retires the current one)")
    sub.add_argument("--activate", metavar="SELECTOR", help="switch signing to an existing key (no new key)")

    user = groups.add_parser("user", help="user accounts").add_subparsers(
        dest="action", metavar="{add,list,delete,password,quota,enable,disable}", required=True
    )
    sub = command(user, "add", _user_add, "add a user (with INBOX, Sent, Drafts, Archive, Trash, Junk)")
    sub.add_argument("email", metavar="EMAIL")
    _password_options(sub)
    sub.add_argument(
        "--quota",
        metavar="SIZE",
        type=_quota_argument,
        help="quota such as 500M or 1G, 0 for unlimited (default: limits.default_quota)",
    )
    sub.add_argument("--name", default="", help="display name")
    sub.add_argument(
        "--role", choices=("user", "admin", "owner"), default="user", help="role (default: user)"
    )
    sub = command(user, "list", _user_list, "list users")
    sub.add_argument("--domain", metavar="DOMAIN", help="only the users of this domain")
    sub = command(user, "delete", _user_delete, "delete a user and its mailboxes")
    sub.add_argument("email", metavar="EMAIL")
    sub = command(user, "password", _user_password, "change a user's password")
    sub.add_argument("email", metavar="EMAIL")
    _password_options(sub)
    sub = command(user, "quota", _user_quota, "set a user's quota")
    sub.add_argument("email", metavar="EMAIL")
    sub.add_argument("size", metavar="SIZE", type=_quota_argument, help="such as 500M or 1G; 0: unlimited")
    sub = command(user, "enable", _user_enable, "let a user log in and receive mail again")
    sub.add_argument("email", metavar="EMAIL")
    sub = command(user, "disable", _user_disable, "stop a user from logging in and receiving mail")
    sub.add_argument("email", metavar="EMAIL")

    alias = groups.add_parser("alias", help="aliases, forwards and catch-alls").add_subparsers(
        dest="action", metavar="{add,list,delete}", required=True
    )
    sub = command(alias, "add", _alias_add, "add an alias; SOURCE @domain makes the domain's catch-all")
    sub.add_argument("source", metavar="SOURCE", help="local@domain, or @domain for the catch-all")
    sub.add_argument("destinations", metavar="DESTINATION", nargs="+", help="one or more addresses")
    sub = command(alias, "list", _alias_list, "list aliases")
    sub.add_argument("--domain", metavar="DOMAIN", help="only the aliases of this domain")
    sub = command(alias, "delete", _alias_delete, "delete an alias or catch-all")
    sub.add_argument("source", metavar="SOURCE")

    queue = groups.add_parser("queue", help="the outbound queue").add_subparsers(
        dest="action", metavar="{list,retry,delete}", required=True
    )
    sub = command(queue, "list", _queue_list, "list queue entries (default: all, oldest first)")
    sub.add_argument("--status", help="comma-separated: pending, sending, deferred, sent, failed, dead")
    sub.add_argument("--limit", type=int, default=100, help="at most this many entries (default 100)")
    sub = command(queue, "retry", _queue_retry, "send entries again now (failed and dead ones too)")
    sub.add_argument("ids", metavar="ID", nargs="+")
    sub = command(queue, "delete", _queue_delete, "remove entries from the queue (not while being sent)")
    sub.add_argument("ids", metavar="ID", nargs="+")
    return parser


# --- passwords -----------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        text = sys.stdin.readline()
        if not text:
            raise UsageError("no password on standard input")
        return text.removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise UsageError(
            "no terminal to ask for the password: pass it on standard input with --password-stdin"
        )
    try:
        first = getpass.getpass(f"New password for {args.email}: ")
        second = getpass.getpass("Repeat the password: ")
    except EOFError:
        raise UsageError("no password entered") from None
    if first != second:
        raise UsageError("the passwords do not match")
    return first


def _prepare_password(args: argparse.Namespace, rounds: int) -> None:
    from whymail.auth.passwords import check_password_policy, hash_password

    password = _read_password(args)
    try:
        check_password_policy(password)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    args.password_hash = hash_password(password, rounds)


# --- running -------------------------------------------------------------------------------------


def _describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN, without the user or password, for error messages."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path or ''}"
    except ValueError:
        return "the configured database"


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "unknown error"


async def _execute(dsn: str, args: argparse.Namespace) -> None:
    import asyncpg

    from whymail.db.migrate import MigrationError, migrate_up
    from whymail.db.pool import connect

    try:
        conn = await connect(dsn)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OperationError(
            f"cannot connect to the database at {_describe_dsn(dsn)}: {_one_line(reason)}"
        ) from None
    try:
        try:
            await migrate_up(conn)
        except MigrationError as exc:
            raise OperationError(f"cannot bring the database schema up to date: {_one_line(exc)}") from None
        await args.handler(conn, args)
    finally:
        await conn.close()


def _run(args: argparse.Namespace) -> int:
    from whymail.config import ConfigError, load_config, resolve_state_dir
    from whymail.directory import service
    from whymail.directory.addresses import normalize_address, normalize_domain

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    state_dir = resolve_state_dir(args.state_dir, config)
    args.app_config = config
    args.maildir_root = Path(config.storage.maildir_root or state_dir / "maildir")

    # Check what can be checked without the database first, and ask for the password before connecting.
    try:
        if getattr(args, "email", None) is not None:
            normalize_address(args.email)
        if getattr(args, "domain", None) is not None:
            normalize_domain(args.domain)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.handler is _user_add and args.quota is None:
        args.quota = config.limits.default_quota
    if hasattr(args, "password_stdin"):
        _prepare_password(args, config.auth.bcrypt_rounds)

    from whymail.db.embedded import resolve_dsn

    try:
        dsn = resolve_dsn(config.db.dsn, state_dir, stop_on_exit=False)
    except Exception as exc:  # pgserver failures come in many types; all mean the same to the operator
        raise OperationError(
            f"cannot start the embedded PostgreSQL in {state_dir}: {_one_line(exc)}"
        ) from None

    import asyncpg

    try:
        asyncio.run(_execute(dsn, args))
    except BrokenPipeError:
        raise  # the reader of our output went away (`| head`): not a database problem
    except service.InvalidInput as exc:
        raise UsageError(str(exc)) from None
    except service.DirectoryError as exc:
        raise OperationError(str(exc)) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise OperationError(f"database error: {_one_line(exc)}") from None
    return EXIT_OK


def _fail(message: str) -> None:
    print(f"{PROG}: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `whymailctl` with `argv` (default: the process arguments); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        return _run(args)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except OperationError as exc:
        _fail(str(exc))
        return EXIT_FAILED
    except BrokenPipeError:
        # Python would complain again when flushing stdout at exit; point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: never a traceback on the operator's screen
        _fail(f"unexpected error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
