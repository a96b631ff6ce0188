"""Search, saved searches and rules of the caller's own mail.

Search is the plain version (every word of `q` in the subject, the addresses or the body, with
filters); the query language and ranking come with the search engine. Rules are stored validated and
can be tried on real messages (`POST /rules/{id}/test`) without changing anything; the engine that
applies them on delivery is the RuleEngine actor's. Another user's saved search or rule is a 404.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import time
from email.header import decode_header, make_header

import asyncpg
import orjson

from whymail.api import search_queries as sq
from whymail.api.errors import ApiError, conflict, not_found
from whymail.api.mail_queries import PageKey
from whymail.api.models_search import (
    PageQuery,
    RuleOut,
    RuleTestIn,
    RuleTestOut,
    RuleTestResult,
    SavedSearchIn,
    SavedSearchOut,
    SearchFilters,
    SearchHit,
    SearchPage,
    SearchQuery,
)
from whymail.api.routes import api
from whymail.api.routes.mail import _raw, _summary
from whymail.api.spec import Req
from whymail.mime.headers import field_value, split_header
from whymail.rules.evaluate import MessageFacts, RuleOutcome, evaluate_rule
from whymail.rules.model import RuleSpec

MAX_RULES_PER_USER = 500
RULE_TEST_BUDGET = 10.0  # seconds of evaluation for one test call; later messages are reported untested


# --- search ------------------------------------------------------------------------------------------


def _encode_cursor(row: asyncpg.Record) -> str:
    payload = orjson.dumps({"d": row["internal_date"].isoformat(), "i": row["id"]})
    return base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> PageKey:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return PageKey(dt.datetime.fromisoformat(payload["d"]), int(payload["i"]))
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise ApiError(400, "invalid_query", "query: cursor: not a cursor this API gave out") from None


async def _search(req: Req, text: str, filters: SearchFilters, cursor: str | None, limit: int) -> SearchPage:
    after = _decode_cursor(cursor) if cursor else None
    user_id = req.me().user_id
    async with req.ctx.pool.acquire() as conn:
        if filters.mailbox_id is not None and not await sq.owns_mailbox(conn, user_id, filters.mailbox_id):
            raise not_found("mailbox")
        rows = await sq.search_messages(conn, user_id, text, filters, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return SearchPage(
        messages=[SearchHit(**_summary(r).model_dump(), mailbox_name=r["mailbox_name"],
                            snippet=" ".join((r["snippet"] or "").split())) for r in rows],
        next_cursor=_encode_cursor(rows[-1]) if more else None,
    )


@api.route("GET", "/search", tag="search", query=SearchQuery, response=SearchPage, errors=(404,))
async def search(req: Req) -> SearchPage:
    """The caller's messages containing every word of `q` and matching the filters, newest first."""
    query: SearchQuery = req.query
    filters = SearchFilters.model_validate(query.model_dump(include=set(SearchFilters.model_fields)))
    return await _search(req, query.q, filters, query.cursor, query.limit)


# --- saved searches ----------------------------------------------------------------------------------


def _saved_out(row: asyncpg.Record) -> SavedSearchOut:
    return SavedSearchOut(
        id=row["id"], name=row["name"], query=row["query"],
        filters=SearchFilters.model_validate(orjson.loads(row["filters"])), usage_count=row["usage_count"],
        last_used_at=row["last_used_at"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


async def _check_filters(req: Req, filters: SearchFilters) -> None:
    if filters.mailbox_id is not None:
        async with req.ctx.pool.acquire() as conn:
            if not await sq.owns_mailbox(conn, req.me().user_id, filters.mailbox_id):
                raise not_found("mailbox")


@api.route("GET", "/saved-searches", tag="search", response=[SavedSearchOut])
async def list_saved_searches(req: Req) -> list[SavedSearchOut]:
    """The caller's saved searches, by name."""
    async with req.ctx.pool.acquire() as conn:
        return [_saved_out(r) for r in await sq.list_saved_searches(conn, req.me().user_id)]


@api.route("POST", "/saved-searches", tag="search", body=SavedSearchIn, response=SavedSearchOut, status=201,
           errors=(404, 409))
async def create_saved_search(req: Req) -> SavedSearchOut:
    """Save a search (words and filters) under a name of the caller's choice."""
    body: SavedSearchIn = req.body
    await _check_filters(req, body.filters)
    try:
        async with req.ctx.pool.acquire() as conn:
            row = await sq.insert_saved_search(conn, req.me().user_id, body.name, body.query, body.filters)
    except asyncpg.UniqueViolationError:
        raise conflict(f"you have a saved search called {body.name} already") from None
    return _saved_out(row)


@api.route("GET", "/saved-searches/{search_id:int}", tag="search", response=SavedSearchOut, errors=(404,))
async def get_saved_search(req: Req) -> SavedSearchOut:
    """One saved search."""
    async with req.ctx.pool.acquire() as conn:
        row = await sq.saved_search(conn, req.me().user_id, req.params["search_id"])
    if row is None:
        raise not_found("saved search")
    return _saved_out(row)


@api.route("PUT", "/saved-searches/{search_id:int}", tag="search", body=SavedSearchIn, response=SavedSearchOut,
           errors=(404, 409))
async def update_saved_search(req: Req) -> SavedSearchOut:
    """Replace a saved search's name, words and filters (its usage count stays)."""
    body: SavedSearchIn = req.body
    await _check_filters(req, body.filters)
    try:
        async with req.ctx.pool.acquire() as conn:
            row = await sq.update_saved_search(conn, req.me().user_id, req.params["search_id"], body.name,
                                               body.query, body.filters)
    except asyncpg.UniqueViolationError:
        raise conflict(f"you have a saved search called {body.name} already") from None
    if row is None:
        raise not_found("saved search")
    return _saved_out(row)


@api.route("DELETE", "/saved-searches/{search_id:int}", tag="search", errors=(404,))
async def delete_saved_search(req: Req) -> None:
    """Delete a saved search."""
    async with req.ctx.pool.acquire() as conn:
        if not await sq.delete_saved_search(conn, req.me().user_id, req.params["search_id"]):
            raise not_found("saved search")


@api.route("POST", "/saved-searches/{search_id:int}/run", tag="search", query=PageQuery, response=SearchPage,
           errors=(404,))
async def run_saved_search(req: Req) -> SearchPage:
    """Run a saved search (a page of results; `cursor` for the next) and count the use."""
    async with req.ctx.pool.acquire() as conn:
        row = await sq.use_saved_search(conn, req.me().user_id, req.params["search_id"])
    if row is None:
        raise not_found("saved search")
    saved = _saved_out(row)
    try:
        return await _search(req, saved.query, saved.filters, req.query.cursor, req.query.limit)
    except ApiError as exc:
        if exc.status == 404:  # its mailbox was deleted since: nothing can match any more
            return SearchPage(messages=[])
        raise


# --- rules -------------------------------------------------------------------------------------------


def _rule_spec(row: asyncpg.Record) -> RuleSpec:
    return RuleSpec(
        name=row["name"], priority=row["priority"], enabled=row["enabled"], apply_to=row["apply_to"],
        match_all=row["match_all"], stop_processing=row["stop_processing"],
        conditions=orjson.loads(row["conditions"]), actions=orjson.loads(row["actions"]),
    )


def _rule_out(row: asyncpg.Record) -> RuleOut:
    return RuleOut(
        **_rule_spec(row).model_dump(), id=row["id"], execution_count=row["execution_count"],
        last_executed_at=row["last_executed_at"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


async def _rule_row(req: Req) -> asyncpg.Record:
    async with req.ctx.pool.acquire() as conn:
        row = await sq.rule(conn, req.me().user_id, req.params["rule_id"])
    if row is None:
        raise not_found("rule")
    return row


@api.route("GET", "/rules", tag="rules", response=[RuleOut])
async def list_rules(req: Req) -> list[RuleOut]:
    """The caller's rules in the order they run (priority, then id)."""
    async with req.ctx.pool.acquire() as conn:
        return [_rule_out(r) for r in await sq.list_rules(conn, req.me().user_id)]


@api.route("POST", "/rules", tag="rules", body=RuleSpec, response=RuleOut, status=201, errors=(409,))
async def create_rule(req: Req) -> RuleOut:
    """Create a rule; an invalid one is a 400 naming the field (e.g. `conditions.0.operator`)."""
    user_id = req.me().user_id
    async with req.ctx.pool.acquire() as conn:
        if await sq.count_rules(conn, user_id) >= MAX_RULES_PER_USER:
            raise conflict(f"you have {MAX_RULES_PER_USER} rules, the most allowed")
        return _rule_out(await sq.insert_rule(conn, user_id, req.body))


@api.route("GET", "/rules/{rule_id:int}", tag="rules", response=RuleOut, errors=(404,))
async def get_rule(req: Req) -> RuleOut:
    """One rule."""
    return _rule_out(await _rule_row(req))


@api.route("PUT", "/rules/{rule_id:int}", tag="rules", body=RuleSpec, response=RuleOut, errors=(404,))
async def update_rule(req: Req) -> RuleOut:
    """Replace a rule (its execution count stays)."""
    async with req.ctx.pool.acquire() as conn:
        row = await sq.update_rule(conn, req.me().user_id, req.params["rule_id"], req.body)
    if row is None:
        raise not_found("rule")
    return _rule_out(row)


@api.route("DELETE", "/rules/{rule_id:int}", tag="rules", errors=(404,))
async def delete_rule(req: Req) -> None:
    """Delete a rule."""
    async with req.ctx.pool.acquire() as conn:
        if not await sq.delete_rule(conn, req.me().user_id, req.params["rule_id"]):
            raise not_found("rule")


def _headers(raw: bytes) -> dict[str, tuple[str, ...]]:
    """The message's header fields by lower-case name, unfolded and with encoded words decoded."""
    fields, _ = split_header(raw, 0, len(raw))
    found: dict[str, list[str]] = {}
    for field in fields:
        value = field_value(raw, field)
        try:
            value = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            pass  # a malformed encoded word: compare the text as written
        found.setdefault(field.name.lower(), []).append(value)
    return {name: tuple(values) for name, values in found.items()}


async def _facts(req: Req, row: asyncpg.Record, with_headers: bool) -> MessageFacts:
    headers = _headers(await _raw(req, row)) if with_headers else {}
    return MessageFacts(
        subject=row["subject"], from_addr=row["from_addr"], to_addrs=row["to_addrs"], cc_addrs=row["cc_addrs"],
        body_text=row["body_text"], size=row["size"], has_attachment=row["has_attachments"], headers=headers,
    )


def _evaluate_all(spec: RuleSpec, facts: list[MessageFacts]) -> list[RuleOutcome]:
    """Evaluate in a worker thread (regexes wait on their worker process) within RULE_TEST_BUDGET."""
    deadline = time.monotonic() + RULE_TEST_BUDGET
    outcomes: list[RuleOutcome] = []
    for message in facts:
        if time.monotonic() > deadline:
            outcomes.append(RuleOutcome(False, (), "not tested: the test ran out of time"))
        else:
            outcomes.append(evaluate_rule(spec, message))
    return outcomes


@api.route("POST", "/rules/{rule_id:int}/test", tag="rules", body=RuleTestIn, response=RuleTestOut, errors=(404,))
async def test_rule(req: Req) -> RuleTestOut:
    """Try the rule on one message or the last N (at most 100): which match and what would be done.
    Nothing is changed, and the rule is tried even when it is disabled."""
    body: RuleTestIn = req.body
    spec = _rule_spec(await _rule_row(req))
    async with req.ctx.pool.acquire() as conn:
        rows = await sq.messages_for_rule_test(conn, req.me().user_id, message_id=body.message_id, last=body.last)
    if body.message_id is not None and not rows:
        raise not_found("message")
    with_headers = any(c.field == "header" for c in spec.conditions)
    facts = []
    for row in rows:
        try:
            facts.append(await _facts(req, row, with_headers))
        except ApiError:  # expunged while we read: test it without its headers
            facts.append(await _facts(req, row, False))
    outcomes = await asyncio.to_thread(_evaluate_all, spec, facts)
    results = [
        RuleTestResult(message_id=row["id"], mailbox_id=row["mailbox_id"], subject=row["subject"],
                       from_addr=row["from_addr"], matched=outcome.matched, actions=list(outcome.actions),
                       error=outcome.error)
        for row, outcome in zip(rows, outcomes, strict=True)
    ]
    return RuleTestOut(rule_id=req.params["rule_id"], tested=len(results),
                       matched=sum(r.matched for r in results), results=results)
