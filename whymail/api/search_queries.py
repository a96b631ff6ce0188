"""SQL of search, saved searches and rules. Every query is scoped by the caller's `user_id`.

Search is the plain version: `plainto_tsquery('simple', q)` against the stored `messages.search_vector`
(subject, addresses, body), newest first, keyset-paginated on (internal_date, id) as message lists are.
"""

from __future__ import annotations

import asyncpg
import orjson

from whymail.api.mail_queries import MESSAGE_COLUMNS, PageKey, _like
from whymail.api.models_search import SearchFilters
from whymail.rules.model import RuleSpec

_SNIPPET_OPTIONS = 'StartSel="", StopSel="", MaxWords=30, MinWords=12, ShortWord=2, HighlightAll=false'
_SNIPPET_SOURCE_CHARS = 20_000  # ts_headline re-parses its input: cap it so a large body costs little


async def search_messages(
    conn: asyncpg.Connection, user_id: int, text: str, filters: SearchFilters, *,
    after: PageKey | None, limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` of the user's messages containing every word of `text` (all when it is blank) and
    matching `filters`, newest first, each with a plain-text `snippet` and its `mailbox_name`."""
    args: list[object] = [user_id]

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where = ["m.user_id = $1"]
    if text.strip():
        query = f"plainto_tsquery('simple', {param(text)}::text)"
        where.append(f"m.search_vector @@ {query}")
        snippet = (f"ts_headline('simple', left(m.body_text, {param(_SNIPPET_SOURCE_CHARS)}::int), {query}, "
                   f"{param(_SNIPPET_OPTIONS)}::text)")
    else:
        snippet = "left(m.body_text, 200)"
    if filters.mailbox_id is not None:
        where.append(f"m.mailbox_id = {param(filters.mailbox_id)}")
    if filters.unread is not None:
        where.append(("NOT " if filters.unread else "") + "('\\Seen' = ANY(m.flags))")
    if filters.flagged is not None:
        where.append(("" if filters.flagged else "NOT ") + "('\\Flagged' = ANY(m.flags))")
    if filters.has_attachment is not None:
        where.append(f"m.has_attachments = {param(filters.has_attachment)}")
    if filters.sender:
        where.append(f"m.from_addr ILIKE {param(_like(filters.sender))}")
    if after is not None:
        where.append(f"(m.internal_date, m.id) < ({param(after.internal_date)}, {param(after.id)})")
    sql = (
        f"SELECT {MESSAGE_COLUMNS}, b.name AS mailbox_name, {snippet} AS snippet "
        f"FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE {' AND '.join(where)} "
        f"ORDER BY m.internal_date DESC, m.id DESC LIMIT {param(limit)}"
    )
    return await conn.fetch(sql, *args)


async def owns_mailbox(conn: asyncpg.Connection, user_id: int, mailbox_id: int) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM mailboxes WHERE id = $1 AND user_id = $2)", mailbox_id, user_id
    ))


# --- saved searches ----------------------------------------------------------------------------------

_SAVED_COLUMNS = "id, name, query, filters, usage_count, last_used_at, created_at, updated_at"


def _filters_json(filters: SearchFilters) -> str:
    return orjson.dumps(filters.model_dump(exclude_none=True)).decode()


async def list_saved_searches(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_SAVED_COLUMNS} FROM saved_searches WHERE user_id = $1 ORDER BY name, id", user_id
    )


async def saved_search(conn: asyncpg.Connection, user_id: int, search_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_SAVED_COLUMNS} FROM saved_searches WHERE id = $1 AND user_id = $2", search_id, user_id
    )


async def insert_saved_search(
    conn: asyncpg.Connection, user_id: int, name: str, query: str, filters: SearchFilters,
) -> asyncpg.Record:
    """Raises asyncpg.UniqueViolationError when the user has a saved search of that name."""
    return await conn.fetchrow(
        f"""INSERT INTO saved_searches (user_id, name, query, filters) VALUES ($1, $2, $3, $4::jsonb)
            RETURNING {_SAVED_COLUMNS}""",
        user_id, name, query, _filters_json(filters),
    )


async def update_saved_search(
    conn: asyncpg.Connection, user_id: int, search_id: int, name: str, query: str, filters: SearchFilters,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""UPDATE saved_searches SET name = $3, query = $4, filters = $5::jsonb, updated_at = now()
             WHERE id = $1 AND user_id = $2 RETURNING {_SAVED_COLUMNS}""",
        search_id, user_id, name, query, _filters_json(filters),
    )


async def use_saved_search(conn: asyncpg.Connection, user_id: int, search_id: int) -> asyncpg.Record | None:
    """Count one run of the saved search and return it (None when it is not the user's)."""
    return await conn.fetchrow(
        f"""UPDATE saved_searches SET usage_count = usage_count + 1, last_used_at = now()
             WHERE id = $1 AND user_id = $2 RETURNING {_SAVED_COLUMNS}""",
        search_id, user_id,
    )


async def delete_saved_search(conn: asyncpg.Connection, user_id: int, search_id: int) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM saved_searches WHERE id = $1 AND user_id = $2 RETURNING id", search_id, user_id
    )
    return deleted is not None


# --- rules -------------------------------------------------------------------------------------------

_RULE_COLUMNS = """id, name, priority, enabled, apply_to, match_all, stop_processing, conditions, actions,
    execution_count, last_executed_at, created_at, updated_at"""


def _rule_values(rule: RuleSpec) -> tuple:
    dumped = rule.model_dump(mode="json")
    return (rule.name, rule.priority, rule.enabled, rule.apply_to, rule.match_all, rule.stop_processing,
            orjson.dumps(dumped["conditions"]).decode(), orjson.dumps(dumped["actions"]).decode())


async def list_rules(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The user's rules in the order they run: priority, then id."""
    return await conn.fetch(
        f"SELECT {_RULE_COLUMNS} FROM email_rules WHERE user_id = $1 ORDER BY priority, id", user_id
    )


async def rule(conn: asyncpg.Connection, user_id: int, rule_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_RULE_COLUMNS} FROM email_rules WHERE id = $1 AND user_id = $2", rule_id, user_id
    )


async def count_rules(conn: asyncpg.Connection, user_id: int) -> int:
    return await conn.fetchval("SELECT count(*) FROM email_rules WHERE user_id = $1", user_id)


async def insert_rule(conn: asyncpg.Connection, user_id: int, spec: RuleSpec) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO email_rules (user_id, name, priority, enabled, apply_to, match_all, stop_processing,
                                     conditions, actions)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb) RETURNING {_RULE_COLUMNS}""",
        user_id, *_rule_values(spec),
    )


async def update_rule(conn: asyncpg.Connection, user_id: int, rule_id: int, spec: RuleSpec) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""UPDATE email_rules SET name = $3, priority = $4, enabled = $5, apply_to = $6, match_all = $7,
                   stop_processing = $8, conditions = $9::jsonb, actions = $10::jsonb, updated_at = now()
             WHERE id = $1 AND user_id = $2 RETURNING {_RULE_COLUMNS}""",
        rule_id, user_id, *_rule_values(spec),
    )


async def delete_rule(conn: asyncpg.Connection, user_id: int, rule_id: int) -> bool:
    deleted = await conn.fetchval("DELETE FROM email_rules WHERE id = $1 AND user_id = $2 RETURNING id",
                                  rule_id, user_id)
    return deleted is not None


async def messages_for_rule_test(
    conn: asyncpg.Connection, user_id: int, *, message_id: int | None, last: int | None,
) -> list[asyncpg.Record]:
    """One message of the user, or their `last` most recent ones, with what rules look at."""
    columns = f"{MESSAGE_COLUMNS}, m.body_text"
    if message_id is not None:
        return await conn.fetch(f"SELECT {columns} FROM messages m WHERE m.id = $1 AND m.user_id = $2",
                                message_id, user_id)
    return await conn.fetch(
        f"SELECT {columns} FROM messages m WHERE m.user_id = $1 ORDER BY m.internal_date DESC, m.id DESC LIMIT $2",
        user_id, last,
    )
