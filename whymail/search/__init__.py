"""Search: the query language of issue 7 (`query`) and its compilation to PostgreSQL SQL (`sql`)."""

from whymail.search.query import QueryError, parse_query
from whymail.search.sql import CompiledQuery, compile_query

__all__ = ["CompiledQuery", "QueryError", "compile_query", "parse_query"]
