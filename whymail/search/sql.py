"""Compile a search query to a parameterised WHERE clause over `messages m` (joined with `mailboxes mb`).

Every value that comes from the user is a `$n` parameter; the SQL text is built only from the fixed
fragments below. Full-text terms become `to_tsquery('simple', $n)` over `m.search_vector` (the
'simple' configuration the vector is built with), their tsquery text assembled here from lexemes that
hold only letters and digits, so it cannot be malformed. Addresses are substring matches (ILIKE) on
the address columns: the text parser keeps `bob@example.com` as one token, so a lexeme search for
`bob` would miss it.
"""

from __future__ import annotations

from dataclasses import dataclass

from whymail.search.query import (
    AddressMatch,
    And,
    DateBound,
    FlagIs,
    FullText,
    HasAttachment,
    InFolder,
    Node,
    Not,
    Or,
    SizeBound,
    parse_query,
)

_ADDRESS_COLUMNS = {"from": "m.from_addr", "to": "m.to_addrs", "cc": "m.cc_addrs"}
NO_RANK_SQL = "0::real"


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    where_sql: str  # a boolean expression over m (messages) and mb (mailboxes)
    params: list[object]  # str, int or datetime, numbered from the `first_param` given
    rank_sql: str  # a real expression over m: higher ranks first; NO_RANK_SQL without full-text terms


def tsquery_text(node: FullText) -> str:
    """The to_tsquery text of one word or phrase: `'a' <-> 'b':*`, each lexeme limited to the weight."""
    parts = []
    for lexeme in node.lexemes:
        label = ("*" if lexeme.prefix else "") + (node.weight or "")
        parts.append(f"'{lexeme.word}'" + (f":{label}" if label else ""))
    return " <-> ".join(parts)


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _Compiler:
    def __init__(self, first_param: int) -> None:
        self.first_param = first_param
        self.params: list[object] = []
        self.ranked: list[str] = []  # tsqueries of the terms that are not negated

    def param(self, value: object) -> str:
        self.params.append(value)
        return f"${self.first_param + len(self.params) - 1}"

    def where(self, node: Node, negated: bool = False) -> str:
        match node:
            case FullText():
                query = f"to_tsquery('simple', {self.param(tsquery_text(node))})"
                if not negated:
                    self.ranked.append(query)
                return f"m.search_vector @@ {query}"
            case AddressMatch(field, text):
                return f"{_ADDRESS_COLUMNS[field]} ILIKE {self.param(like_pattern(text))}"
            case InFolder(name):
                return f"mb.name = {self.param(name)}"
            case FlagIs(flag, present):
                # The flag comes from the parser's fixed table, never from the query text.
                return ("" if present else "NOT ") + f"('{flag}' = ANY(m.flags))"
            case HasAttachment():
                return "m.has_attachments"
            case DateBound(before, at):
                return f"m.internal_date {'<' if before else '>='} {self.param(at)}"
            case SizeBound(larger, limit):
                return f"m.size {'>' if larger else '<'} {self.param(limit)}"
            case Not(operand):
                return f"NOT ({self.where(operand, not negated)})"
            case And(()):
                return "TRUE"
            case And(operands):
                return "(" + " AND ".join(self.where(op, negated) for op in operands) + ")"
            case Or(operands):
                return "(" + " OR ".join(self.where(op, negated) for op in operands) + ")"
        raise TypeError(f"not a query node: {node!r}")

    def rank(self) -> str:
        if not self.ranked:
            return NO_RANK_SQL
        return f"ts_rank(m.search_vector, {' || '.join(self.ranked)})"


def compile_node(node: Node, *, first_param: int = 1) -> CompiledQuery:
    """The SQL of a parsed query, its parameters numbered from `first_param`."""
    compiler = _Compiler(first_param)
    where_sql = compiler.where(node)
    return CompiledQuery(where_sql, compiler.params, compiler.rank())


def compile_query(text: str, *, first_param: int = 1) -> CompiledQuery:
    """Parse and compile a query; raises QueryError (with the position) when it is malformed."""
    return compile_node(parse_query(text), first_param=first_param)
