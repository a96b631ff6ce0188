"""`whymailctl`: manage domains, users, aliases, DKIM keys, the outbound queue and system settings.

Two ways to reach the server:

- through the REST API with a token: `whymailctl login` saves one (see `whymail/cli/api_client.py`),
  or `--server`/`WHYMAIL_SERVER` with `WHYMAIL_TOKEN` name one. The server checks what the caller's
  role allows, and an owner manages their own domain.
- without a token, straight in the database named by the configuration (the embedded one in dev).
  It calls the same directory service functions as the REST API, so the rules and messages are the
  same; a running server picks the change up through the `whymail_directory` NOTIFY triggers.

Both print the same tables for people and JSON with `--json`.

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
Remote = Callable[[Any, argparse.Namespace], None]
NOT_LOGGED_IN = "not logged in or token expired: run whymailctl login"


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


def _time_text(value: Any) -> str:
    """`2024-05-01 12:00:00` (UTC as stored) from a datetime or its ISO text."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _plural(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


# Both modes print through these, from plain dicts (the API's JSON, or a dataclass as a dict).


def _show_domains(args: argparse.Namespace, domains: list[dict]) -> None:
    if args.json:
        _print_json(domains)
        return
    _print_table(
        ("DOMAIN", "STATUS", "USERS", "ALIASES"),
        [(d["name"], _status(d["is_active"]), str(d["user_count"]), str(d["alias_count"])) for d in domains],
    )


def _show_users(args: argparse.Namespace, users: list[dict]) -> None:
    if args.json:
        _print_json(users)
        return
    _print_table(
        ("EMAIL", "NAME", "ROLE", "STATUS", "QUOTA", "USED", "MESSAGES"),
        [
            (
                u["email"],
                u["display_name"],
                u["role"],
                _status(u["is_active"]),
                _quota_text(u["quota_bytes"]),
                format_size(u["storage_used"]),
                str(u["message_count"]),
            )
            for u in users
        ],
    )


def _show_aliases(args: argparse.Namespace, aliases: list[dict]) -> None:
    if args.json:
        _print_json(aliases)
        return
    _print_table(
        ("SOURCE", "DESTINATIONS", "STATUS"),
        [
            (
                a["source"] + (" (catch-all)" if a["is_catch_all"] else ""),
                ", ".join(a["destinations"]),
                _status(a["is_active"]),
            )
            for a in aliases
        ],
    )


def _show_queue(args: argparse.Namespace, entries: list[dict], counts: dict[str, int]) -> None:
    if args.json:
        _print_json(entries)
        return
    _print_table(
        ("ID", "STATUS", "ATTEMPTS", "NEXT", "FROM", "TO", "LAST ERROR"),
        [
            (str(e["id"]), e["status"], str(e["attempts"]),
             _time_text(e["next_attempt_at"]) if e["status"] in ("pending", "deferred") else "-",
             e["sender"] or "<>", ",".join(e["recipients"])[:60], (e["last_error"] or "")[:70])
            for e in entries
        ],
    )
    print(" ".join(f"{state}={counts.get(state, 0)}" for state in _QUEUE_STATES))


def _show_queue_outcome(args: argparse.Namespace, verb: str, done: list[int], missing: list[int]) -> None:
    """What `queue retry`/`queue delete` did; exit 1 naming the entries it could not touch."""
    if verb == "retried":
        text = f"retrying {_plural(len(done))} now" if done else "nothing to retry"
    else:
        text = f"deleted {_plural(len(done))}"
    _report(args, {verb: done, f"not_{verb}": missing}, text)
    if missing:
        raise OperationError(f"not found or being sent right now: {', '.join(map(str, missing))}")


def _show_new_dkim_key(args: argparse.Namespace, key: dict) -> None:
    if args.json:
        _print_json(key)
        return
    domain, selector = key["domain"], key["selector"]
    print(f"new {key['algorithm']} DKIM key for {domain}, selector {selector}. Publish this DNS record:")
    print()
    print(key["dns_record"])
    print()
    if key["active"]:
        print("Outbound mail of the domain is signed with it within a minute.")
    else:
        print(f"The current key keeps signing until the record is published and you run:\n"
              f"  whymailctl domain dkim {domain} --activate {selector}")


def _show_activated_dkim_key(args: argparse.Namespace, key: dict) -> None:
    _report(args, key, f"{key['domain']} now signs with selector {key['selector']} ({key['algorithm']}) "
                       "within a minute")


def _show_dkim_keys(args: argparse.Namespace, keys: list[dict]) -> None:
    if args.json:
        _print_json(keys)
        return
    _print_table(
        ("SELECTOR", "ALGORITHM", "STATUS", "CREATED", "DNS RECORD"),
        [(k["selector"], k["algorithm"], "signing" if k["is_active"] else "inactive", _time_text(k["created_at"]),
          k["dns_record"]) for k in keys],
    )


def _show_settings(args: argparse.Namespace, settings: dict[str, Any], updated_at: Any) -> None:
    if args.json:
        _print_json({"settings": settings, "updated_at": updated_at})
        return
    _print_table(
        ("KEY", "VALUE"),
        [(key, json.dumps(value, ensure_ascii=False)) for key, value in sorted(settings.items())],
    )


def _show_reload(args: argparse.Namespace, settings: dict[str, Any], updated_at: Any) -> None:
    changed = _time_text(updated_at) if updated_at else "never"
    _report(args, {"keys": len(settings), "updated_at": updated_at},
            f"nothing to reload: the server reads these settings from the database when it uses them "
            f"({len(settings)} keys, last changed {changed})")


def _setting_value(text: str) -> Any:
    """A JSON value (`30`, `true`, `[1, 2]`, `"x"`), or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


_SELECTOR = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _dkim_selector(given: str | None) -> str:
    import datetime as dt

    selector = (given or f"wm{dt.datetime.now(dt.UTC):%Y%m}").lower()
    if not _SELECTOR.fullmatch(selector):
        raise UsageError(f"invalid selector {selector!r}: one DNS label of letters, digits and '-'")
    return selector


# --- command handlers ----------------------------------------------------------------------------
# Imported lazily: `whymailctl --help` and usage errors stay fast and need no database driver.


async def _domain_add(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    info = await service.add_domain(conn, args.domain)
    _report(args, info, f"added domain {info.name}")


async def _domain_list(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    _show_domains(args, [asdict(d) for d in await service.list_domains(conn)])


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

    _show_users(args, [asdict(u) for u in await service.list_users(conn, args.domain)])


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
    from whymail.db.dkim_keys import activate_key, list_keys, store_key
    from whymail.directory.addresses import normalize_domain
    from whymail.mailauth.dkim import dns_txt_record, generate_key

    domain = normalize_domain(args.domain)
    if args.list:
        if not await conn.fetchval("SELECT 1 FROM domains WHERE name = $1", domain):
            raise OperationError(f"domain {domain} does not exist")
        keys = await list_keys(conn, domain)
        _show_dkim_keys(args, [
            {**key, "dns_record": dns_txt_record(key["selector"], domain, key["algorithm"], key["public_key"])}
            for key in keys
        ])
        return
    if args.activate:
        selector = args.activate.lower()
        try:
            algorithm = await activate_key(conn, domain, selector)
        except LookupError as exc:
            raise OperationError(str(exc)) from None
        _show_activated_dkim_key(args, {"domain": domain, "selector": selector, "algorithm": algorithm,
                                        "active": True})
        return
    selector = _dkim_selector(args.selector)
    private_pem, public_b64 = await asyncio.to_thread(generate_key, args.algorithm, args.bits)
    try:
        active = await store_key(conn, domain, selector, args.algorithm, private_pem, public_b64, activate=args.now)
    except LookupError as exc:
        raise OperationError(str(exc)) from None
    except ValueError as exc:
        raise OperationError(f"{exc}; choose another --selector") from None
    _show_new_dkim_key(args, {"domain": domain, "selector": selector, "algorithm": args.algorithm,
                              "public_key": public_b64,
                              "dns_record": dns_txt_record(selector, domain, args.algorithm, public_b64),
                              "active": active})


_QUEUE_STATES = ("pending", "sending", "deferred", "sent", "failed", "dead")


def _queue_ids(values: list[str]) -> list[int]:
    try:
        ids = [int(v) for v in values]
    except ValueError:
        raise UsageError("queue ids are numbers (see `whymailctl queue list`)") from None
    if any(i <= 0 for i in ids):
        raise UsageError("queue ids are positive numbers")
    return ids


def _queue_statuses(text: str | None) -> list[str] | None:
    if not text:
        return None
    statuses = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in _QUEUE_STATES]
    if unknown:
        raise UsageError(f"unknown status {unknown[0]!r}: use {', '.join(_QUEUE_STATES)}")
    return statuses


async def _queue_list(conn: Any, args: argparse.Namespace) -> None:
    from whymail.queue import store

    entries = await store.list_entries(conn, statuses=_queue_statuses(args.status), limit=args.limit)
    counts = {} if args.json else await store.counts_by_status(conn)
    _show_queue(args, [store.as_json(e) for e in entries], counts)


async def _queue_retry(conn: Any, args: argparse.Namespace) -> None:
    from whymail.queue import store

    ids = _queue_ids(args.ids)
    done = await store.retry_entries(conn, ids, lifetime=args.app_config.queue.max_lifetime)
    _show_queue_outcome(args, "retried", done, sorted(set(ids) - set(done)))


async def _queue_delete(conn: Any, args: argparse.Namespace) -> None:
    from whymail.queue import store

    ids = _queue_ids(args.ids)
    done = await store.delete_entries(conn, ids)
    _show_queue_outcome(args, "deleted", done, sorted(set(ids) - set(done)))


async def _config_show(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import reports

    settings = await reports.read_settings(conn)
    _show_settings(args, settings.values, settings.updated_at)


async def _config_set(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import reports

    settings = await reports.write_settings(conn, {args.key: _setting_value(args.value)}, None)
    _report(args, {"settings": settings.values, "updated_at": settings.updated_at},
            f"set {args.key} = {json.dumps(settings.values.get(args.key), ensure_ascii=False)}")


async def _config_unset(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import reports

    settings = await reports.write_settings(conn, {args.key: None}, None)
    _report(args, {"settings": settings.values, "updated_at": settings.updated_at}, f"removed {args.key}")


async def _config_reload(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import reports

    settings = await reports.read_settings(conn)
    _show_reload(args, settings.values, settings.updated_at)


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
    _show_aliases(args, [{**asdict(a), "is_catch_all": a.is_catch_all} for a in aliases])


async def _alias_delete(conn: Any, args: argparse.Namespace) -> None:
    from whymail.directory import service

    alias = await service.delete_alias(conn, args.source)
    _report(args, alias, f"deleted {_alias_kind(alias.source)} {alias.source}")


# --- the same commands through the REST API -------------------------------------------------------
# `api` is a whymail.cli.api_client.ApiClient; a refusal raises its ApiFailure, rendered by `_run_remote`.


def _find_domain(api: Any, name: str) -> dict:
    from whymail.directory.addresses import normalize_domain

    wanted = normalize_domain(name)
    for domain in api.get("/domains"):
        if domain["name"] == wanted:
            return domain
    raise OperationError(f"domain {wanted} does not exist")


def _domains(api: Any, name: str | None) -> list[dict]:
    return [_find_domain(api, name)] if name else api.get("/domains")


def _find_user(api: Any, email: str) -> dict:
    from whymail.directory.addresses import normalize_address

    wanted = normalize_address(email)
    domain = _find_domain(api, wanted.rpartition("@")[2])
    for user in api.get(f"/domains/{domain['id']}/users"):
        if user["email"] == wanted:
            return user
    raise OperationError(f"user {wanted} does not exist")


def _find_alias(api: Any, source: str) -> dict:
    from whymail.directory.addresses import normalize_alias_source

    try:
        wanted, domain_name = normalize_alias_source(source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    domain = _find_domain(api, domain_name)
    for alias in api.get(f"/domains/{domain['id']}/aliases"):
        if alias["source"] == wanted:
            return alias
    raise OperationError(f"{_alias_kind(wanted)} {wanted} does not exist")


def _api_domain_add(api: Any, args: argparse.Namespace) -> None:
    domain = api.post("/domains", {"name": args.domain})
    _report(args, domain, f"added domain {domain['name']}")


def _api_domain_list(api: Any, args: argparse.Namespace) -> None:
    _show_domains(args, api.get("/domains"))


def _api_domain_delete(api: Any, args: argparse.Namespace) -> None:
    from whymail.cli.api_client import ApiFailure

    domain = _find_domain(api, args.domain)
    try:
        api.delete(f"/domains/{domain['id']}", force="true" if args.force else None)
    except ApiFailure as exc:
        if exc.status == 409 and not args.force and domain["user_count"]:
            raise OperationError(f"{exc.message}, or use --force to delete them with the domain") from None
        raise
    if args.json:
        _print_json(domain)
        return
    print(f"deleted domain {domain['name']} ({domain['user_count']} users, {domain['alias_count']} aliases)")
    if domain["user_count"]:
        print("note: the users' Maildir files on the server were not removed")


def _api_domain_dkim(api: Any, args: argparse.Namespace) -> None:
    domain = _find_domain(api, args.domain)
    if args.list:
        _show_dkim_keys(args, api.get(f"/domains/{domain['id']}/dkim"))
        return
    if args.activate:
        key = api.post(f"/domains/{domain['id']}/dkim/{args.activate.lower()}/activate")
        _show_activated_dkim_key(args, {**key, "active": key["is_active"]})
        return
    body = {"selector": _dkim_selector(args.selector), "algorithm": args.algorithm, "bits": args.bits,
            "activate": args.now}
    key = api.post(f"/domains/{domain['id']}/dkim", body)
    _show_new_dkim_key(args, {**key, "active": key["is_active"]})


def _api_user_add(api: Any, args: argparse.Namespace) -> None:
    from whymail.directory.addresses import normalize_address
    from whymail.directory.service import DEFAULT_MAILBOXES

    address = normalize_address(args.email)
    domain = _find_domain(api, address.rpartition("@")[2])
    body = {"email": address, "password": args.password, "display_name": args.name, "role": args.role}
    if args.quota is not None:  # else the server's default
        body["quota_bytes"] = args.quota
    user = api.post(f"/domains/{domain['id']}/users", body)
    if args.json:
        _print_json(user)
        return
    mailboxes = ", ".join(name for name, _ in DEFAULT_MAILBOXES)
    print(f"added user {user['email']} (quota {_quota_text(user['quota_bytes'])}; mailboxes {mailboxes})")


def _api_user_list(api: Any, args: argparse.Namespace) -> None:
    users = [user for domain in _domains(api, args.domain) for user in api.get(f"/domains/{domain['id']}/users")]
    _show_users(args, sorted(users, key=lambda user: user["email"]))


def _api_user_delete(api: Any, args: argparse.Namespace) -> None:
    user = _find_user(api, args.email)
    api.delete(f"/users/{user['id']}")
    if args.json:
        _print_json(user)
        return
    print(f"deleted user {user['email']}")
    print("note: the user's Maildir files on the server were not removed")


def _api_patch_user(api: Any, args: argparse.Namespace, change: dict[str, Any], text: str) -> None:
    """PATCH the user named by args.email and report `text` (with {email} and {quota} filled in)."""
    user = _find_user(api, args.email)
    updated = api.patch(f"/users/{user['id']}", change)
    _report(args, updated, text.format(email=updated["email"], quota=_quota_text(updated["quota_bytes"])))


def _api_user_password(api: Any, args: argparse.Namespace) -> None:
    _api_patch_user(api, args, {"password": args.password}, "changed the password of {email}")


def _api_user_quota(api: Any, args: argparse.Namespace) -> None:
    _api_patch_user(api, args, {"quota_bytes": args.size}, "set the quota of {email} to {quota}")


def _api_user_enable(api: Any, args: argparse.Namespace) -> None:
    _api_patch_user(api, args, {"is_active": True}, "enabled {email}")


def _api_user_disable(api: Any, args: argparse.Namespace) -> None:
    _api_patch_user(api, args, {"is_active": False}, "disabled {email}")


def _api_alias_add(api: Any, args: argparse.Namespace) -> None:
    from whymail.directory.addresses import normalize_alias_source

    destinations = [part.strip() for arg in args.destinations for part in arg.split(",") if part.strip()]
    try:
        source, domain_name = normalize_alias_source(args.source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    domain = _find_domain(api, domain_name)
    alias = api.post(f"/domains/{domain['id']}/aliases", {"source": source, "destinations": destinations})
    if args.json:
        _print_json(alias)
        return
    print(f"added {_alias_kind(alias['source'])} {alias['source']} -> {', '.join(alias['destinations'])}")


def _api_alias_list(api: Any, args: argparse.Namespace) -> None:
    aliases = [a for domain in _domains(api, args.domain) for a in api.get(f"/domains/{domain['id']}/aliases")]
    _show_aliases(args, sorted(aliases, key=lambda alias: (alias["domain"], alias["source"])))


def _api_alias_delete(api: Any, args: argparse.Namespace) -> None:
    alias = _find_alias(api, args.source)
    api.delete(f"/aliases/{alias['id']}")
    _report(args, alias, f"deleted {_alias_kind(alias['source'])} {alias['source']}")


def _api_queue_list(api: Any, args: argparse.Namespace) -> None:
    statuses = _queue_statuses(args.status)
    page = api.get("/queue", status=",".join(statuses) if statuses else None, limit=args.limit)
    _show_queue(args, page["items"], page["counts"])


def _api_queue_each(method: str, path: str, verb: str) -> Remote:
    """A handler that calls `method path` for each id; 404 and 409 (being sent) count as not done."""

    def run(api: Any, args: argparse.Namespace) -> None:
        from whymail.cli.api_client import ApiFailure

        done, missing = [], []
        for entry_id in _queue_ids(args.ids):
            try:
                api.call(method, path.format(entry_id), {} if method == "POST" else None)
            except ApiFailure as exc:
                if exc.status not in (404, 409):
                    raise
                missing.append(entry_id)
            else:
                done.append(entry_id)
        _show_queue_outcome(args, verb, done, sorted(missing))

    return run


_api_queue_retry = _api_queue_each("POST", "/queue/{}/retry", "retried")
_api_queue_delete = _api_queue_each("DELETE", "/queue/{}", "deleted")


def _api_config_show(api: Any, args: argparse.Namespace) -> None:
    config = api.get("/system/config")
    _show_settings(args, config["settings"], config["updated_at"])


def _api_config_set(api: Any, args: argparse.Namespace) -> None:
    config = api.put("/system/config", {"settings": {args.key: _setting_value(args.value)}})
    _report(args, config, f"set {args.key} = {json.dumps(config['settings'].get(args.key), ensure_ascii=False)}")


def _api_config_unset(api: Any, args: argparse.Namespace) -> None:
    config = api.put("/system/config", {"settings": {args.key: None}})
    _report(args, config, f"removed {args.key}")


def _api_config_reload(api: Any, args: argparse.Namespace) -> None:
    config = api.get("/system/config")
    _show_reload(args, config["settings"], config["updated_at"])


# --- login and logout ----------------------------------------------------------------------------


def _server_of(args: argparse.Namespace, saved: Any) -> str:
    """--server, else $WHYMAIL_SERVER, else the saved login's server, else the dev server."""
    from whymail.cli.api_client import DEFAULT_SERVER, normalize_server

    given = args.server or os.environ.get("WHYMAIL_SERVER")
    try:
        return normalize_server(given or (saved.server if saved else DEFAULT_SERVER))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _read_login(args: argparse.Namespace) -> tuple[str, str]:
    """(email, password) of `whymailctl login`: the email from the command line or asked, then the password."""
    email = args.email
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsageError("no password on standard input")
    elif not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pass it on standard input with --password-stdin")
    try:
        if not email:
            if args.password_stdin:
                raise UsageError("give the EMAIL to log in as on the command line")
            email = input("Email: ").strip()
        if not args.password_stdin:
            password = getpass.getpass(f"Password for {email}: ")
    except EOFError:
        raise UsageError("nothing entered") from None
    if not email or not password:
        raise UsageError("an email and a password are needed")
    return email, password


def _login(args: argparse.Namespace) -> None:
    import socket

    from whymail.cli.api_client import ApiClient, ApiFailure, Login, load_login, login_path, save_login

    path = login_path()
    saved = load_login(path)
    server = _server_of(args, saved)
    email, password = _read_login(args)
    api = ApiClient(server)
    try:
        pair = api.post("/auth/login", {"email": email, "password": password})
        access = pair["access_token"]
        created = api.call("POST", "/auth/tokens", {"name": f"whymailctl@{socket.gethostname()}"[:200]},
                           token=access)
    except ApiFailure as exc:
        raise OperationError(exc.message) from None
    # The token is what stays: end the session the password opened, and revoke the token this one
    # replaces. Both are best effort: one that is already gone is fine.
    try:
        api.call("POST", "/auth/logout", {"refresh_token": pair["refresh_token"]}, token=access)
    except ApiFailure:
        pass
    if saved is not None and saved.server == server and saved.token_id is not None:
        try:
            api.call("DELETE", f"/auth/tokens/{saved.token_id}", token=saved.token)
        except ApiFailure:
            pass
    user = pair["user"]
    try:
        save_login(path, Login(server=server, token=created["token"], token_id=created["id"], email=user["email"]))
    except OSError as exc:
        api.call("DELETE", f"/auth/tokens/{created['id']}", token=created["token"])
        raise OperationError(f"cannot save the login in {path}: {exc.strerror or exc}") from None
    _report(args, {"server": server, "email": user["email"], "role": user["role"], "token_id": created["id"],
                   "saved_in": str(path)},
            f"logged in to {server} as {user['email']} ({user['role']}); token saved in {path}")


def _logout(args: argparse.Namespace) -> None:
    from whymail.cli.api_client import ApiClient, ApiFailure, load_login, login_path

    path = login_path()
    saved = load_login(path)
    if saved is None:
        raise OperationError(f"not logged in (no saved login in {path})")
    problem = None
    if saved.token_id is not None:
        try:
            ApiClient(saved.server, saved.token).delete(f"/auth/tokens/{saved.token_id}")
        except ApiFailure as exc:
            if exc.status not in (401, 404):  # already expired or revoked: nothing left to revoke
                problem = exc.message
    path.unlink(missing_ok=True)
    if problem:
        raise OperationError(f"removed the saved login, but the token could not be revoked: {problem}")
    _report(args, {"server": saved.server, "email": saved.email, "logged_out": True},
            f"logged out of {saved.server}; the token is revoked")


# --- argument parsing ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one line and exit status 2, rendered by `main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix(PROG + ' ')}: {message}" if self.prog != PROG else message)


def _common_options(suppress: bool) -> _Parser:
    """-c/--state-dir/--json/--server, accepted before the command and (for convenience) after it."""
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
    parser.add_argument(
        "--server",
        metavar="URL",
        default=default if suppress else None,
        help="the server's API, such as http://mail.example.com:8080 (default: $WHYMAIL_SERVER, else the saved "
             "login's); commands then go through the API with the saved login or $WHYMAIL_TOKEN",
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
        description="Manage WhyMail domains, users, aliases, DKIM keys, the outbound queue and system "
                    "settings. After `whymailctl login` (or with --server/$WHYMAIL_SERVER and $WHYMAIL_TOKEN) "
                    "every command goes through the server's API; without, straight to the configured database.",
        parents=[_common_options(suppress=False)],
    )
    groups = parser.add_subparsers(
        dest="group", metavar="{domain,user,alias,queue,config,login,logout}", required=True
    )

    def command(
        group: Any, name: str, handler: Handler, remote: Remote, help_text: str, description: str = ""
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=description or help_text, parents=[common])
        sub.set_defaults(handler=handler, remote=remote, session=None)
        return sub

    sub = groups.add_parser(
        "login", help="log in to a server's API and save a token for the other commands", parents=[common],
        description="Log in with an email and password and save an API token (named whymailctl@<host>) with "
                    "the server's URL, readable by you only, in ~/.config/whymail/ctl.json ($WHYMAIL_CTL_CONFIG "
                    "overrides the path). Every other command then goes through the API as that account.",
    )
    sub.set_defaults(handler=None, remote=None, session=_login)
    sub.add_argument("email", metavar="EMAIL", nargs="?", help="the account (asked for when not given)")
    _password_options(sub)
    sub = groups.add_parser(
        "logout", help="revoke the saved token and forget it", parents=[common],
        description="Revoke the saved API token on its server and remove the saved login; commands then use the "
                    "database directly again.",
    )
    sub.set_defaults(handler=None, remote=None, session=_logout)

    domain = groups.add_parser("domain", help="local domains").add_subparsers(
        dest="action", metavar="{add,list,delete,dkim}", required=True
    )
    sub = command(domain, "add", _domain_add, _api_domain_add, "add a local domain")
    sub.add_argument("domain", metavar="DOMAIN")
    command(domain, "list", _domain_list, _api_domain_list, "list the domains")
    sub = command(domain, "delete", _domain_delete, _api_domain_delete, "delete a domain and its aliases")
    sub.add_argument("domain", metavar="DOMAIN")
    sub.add_argument("--force", action="store_true", help="also delete the domain's users and their mail")
    sub = command(domain, "dkim", _domain_dkim, _api_domain_dkim, "generate a DKIM signing key and print its DNS record")
    sub.add_argument("domain", metavar="DOMAIN")
    sub.add_argument("--selector", help="DNS selector (default: wmYYYYMM)")
    sub.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa", help="key type (default: rsa)")
    sub.add_argument("--bits", type=int, choices=(1024, 2048, 3072, 4096), default=2048, help="RSA key size")
    sub.add_argument("--now", action="store_true", help="sign with the new key at once (retires the current one)")
    sub.add_argument("--activate", metavar="SELECTOR", help="switch signing to an existing key (no new key)")
    sub.add_argument("--list", action="store_true", help="list the domain's keys and DNS records (no new key)")

    user = groups.add_parser("user", help="user accounts").add_subparsers(
        dest="action", metavar="{add,list,delete,password,quota,enable,disable}", required=True
    )
    sub = command(user, "add", _user_add, _api_user_add, "add a user (with INBOX, Sent, Drafts, Archive, Trash, Junk)")
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
    sub = command(user, "list", _user_list, _api_user_list, "list users")
    sub.add_argument("--domain", metavar="DOMAIN", help="only the users of this domain")
    sub = command(user, "delete", _user_delete, _api_user_delete, "delete a user and its mailboxes")
    sub.add_argument("email", metavar="EMAIL")
    sub = command(user, "password", _user_password, _api_user_password, "change a user's password")
    sub.add_argument("email", metavar="EMAIL")
    _password_options(sub)
    sub = command(user, "quota", _user_quota, _api_user_quota, "set a user's quota")
    sub.add_argument("email", metavar="EMAIL")
    sub.add_argument("size", metavar="SIZE", type=_quota_argument, help="such as 500M or 1G; 0: unlimited")
    sub = command(user, "enable", _user_enable, _api_user_enable, "let a user log in and receive mail again")
    sub.add_argument("email", metavar="EMAIL")
    sub = command(user, "disable", _user_disable, _api_user_disable, "stop a user from logging in and receiving mail")
    sub.add_argument("email", metavar="EMAIL")

    alias = groups.add_parser("alias", help="aliases, forwards and catch-alls").add_subparsers(
        dest="action", metavar="{add,list,delete}", required=True
    )
    sub = command(alias, "add", _alias_add, _api_alias_add, "add an alias; SOURCE @domain makes the domain's catch-all")
    sub.add_argument("source", metavar="SOURCE", help="local@domain, or @domain for the catch-all")
    sub.add_argument("destinations", metavar="DESTINATION", nargs="+", help="one or more addresses")
    sub = command(alias, "list", _alias_list, _api_alias_list, "list aliases")
    sub.add_argument("--domain", metavar="DOMAIN", help="only the aliases of this domain")
    sub = command(alias, "delete", _alias_delete, _api_alias_delete, "delete an alias or catch-all")
    sub.add_argument("source", metavar="SOURCE")

    queue = groups.add_parser("queue", help="the outbound queue").add_subparsers(
        dest="action", metavar="{list,retry,delete}", required=True
    )
    sub = command(queue, "list", _queue_list, _api_queue_list, "list queue entries (default: all, oldest first)")
    sub.add_argument("--status", help="comma-separated: pending, sending, deferred, sent, failed, dead")
    sub.add_argument("--limit", type=int, default=100, help="at most this many entries (default 100)")
    sub = command(queue, "retry", _queue_retry, _api_queue_retry, "send entries again now (failed and dead ones too)")
    sub.add_argument("ids", metavar="ID", nargs="+")
    sub = command(queue, "delete", _queue_delete, _api_queue_delete, "remove entries from the queue (not while being sent)")
    sub.add_argument("ids", metavar="ID", nargs="+")

    config = groups.add_parser("config", help="system settings stored in the database").add_subparsers(
        dest="action", metavar="{show,set,unset,reload}", required=True
    )
    command(config, "show", _config_show, _api_config_show, "print the system settings")
    sub = command(config, "set", _config_set, _api_config_set, "set a system setting")
    sub.add_argument("key", metavar="KEY", type=_config_key)
    sub.add_argument("value", metavar="VALUE", help="a JSON value (30, true, [\"a\"]); other text is a string")
    sub = command(config, "unset", _config_unset, _api_config_unset, "remove a system setting")
    sub.add_argument("key", metavar="KEY", type=_config_key)
    command(
        config, "reload", _config_reload, _api_config_reload, "show when the settings last changed",
        "The server reads the system settings from the database each time it uses them, so a change made "
        "with `config set` applies at once and there is nothing to reload: this prints how many settings "
        "there are and when they last changed. (The configuration file is read when the server starts.)",
    )
    return parser


_CONFIG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def _config_key(text: str) -> str:
    if not _CONFIG_KEY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid key {text[:50]!r}: 1-200 letters, digits, '_', '.' or '-'")
    return text


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


def _remote_client(args: argparse.Namespace) -> Any:
    """The API client when a server or a token is given or a login is saved, else None (the database)."""
    from whymail.cli.api_client import ApiClient, load_login, login_path

    saved = load_login(login_path())
    env_token = os.environ.get("WHYMAIL_TOKEN") or None
    if saved is None and env_token is None and not (args.server or os.environ.get("WHYMAIL_SERVER")):
        return None
    server = _server_of(args, saved)
    # A saved token goes only to the server it was issued by.
    token = env_token or (saved.token if saved is not None and saved.server == server else None)
    return ApiClient(server, token)


def _validate_names(args: argparse.Namespace) -> None:
    from whymail.directory.addresses import normalize_address, normalize_domain

    try:
        if getattr(args, "email", None) is not None:
            normalize_address(args.email)
        if getattr(args, "domain", None) is not None:
            normalize_domain(args.domain)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run_remote(api: Any, args: argparse.Namespace) -> int:
    from whymail.auth.passwords import check_password_policy
    from whymail.cli.api_client import ApiFailure

    if not api.token:
        raise OperationError(NOT_LOGGED_IN)
    _validate_names(args)
    if hasattr(args, "password_stdin"):
        args.password = _read_password(args)
        try:
            check_password_policy(args.password)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        args.remote(api, args)
    except ApiFailure as exc:
        raise OperationError(NOT_LOGGED_IN if exc.status == 401 else exc.message) from None
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.session is not None:
        args.session(args)
        return EXIT_OK
    api = _remote_client(args)
    if api is not None:
        return _run_remote(api, args)
    return _run_direct(args)


def _run_direct(args: argparse.Namespace) -> int:
    from whymail.config import ConfigError, load_config, resolve_state_dir
    from whymail.directory import service

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    state_dir = resolve_state_dir(args.state_dir, config)
    args.app_config = config
    args.maildir_root = Path(config.storage.maildir_root or state_dir / "maildir")

    # Check what can be checked without the database first, and ask for the password before connecting.
    _validate_names(args)
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
