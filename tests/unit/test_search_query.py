"""The search query language (issue 7): parsing, compilation to parameterised SQL, and errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.search import CompiledQuery, QueryError, compile_query, parse_query
from whymail.search.query import MAX_QUERY_LENGTH, MAX_TERMS, And, FullText, Lexeme, Not, Or
from whymail.search.sql import NO_RANK_SQL

FTS = "m.search_vector @@ to_tsquery('simple', ${n})"


def fts(n: int) -> str:
    return FTS.format(n=n)


# --- words, phrases, prefixes -----------------------------------------------------------------------


def test_single_word_is_one_tsquery_parameter() -> None:
    compiled = compile_query("Invoice")
    assert compiled.where_sql == fts(1)
    assert compiled.params == ["'invoice'"]
    assert compiled.rank_sql == "ts_rank(m.search_vector, to_tsquery('simple', $1))"


def test_words_are_anded() -> None:
    compiled = compile_query("quarterly report")
    assert compiled.where_sql == f"({fts(1)} AND {fts(2)})"
    assert compiled.params == ["'quarterly'", "'report'"]


def test_phrase_is_followed_by_chain() -> None:
    compiled = compile_query('"annual general meeting"')
    assert compiled.params == ["'annual' <-> 'general' <-> 'meeting'"]


def test_prefix_word_gets_star_label() -> None:
    assert compile_query("wild*").params == ["'wild':*"]


def test_prefix_inside_phrase_applies_to_its_word() -> None:
    assert compile_query('"new rep*"').params == ["'new' <-> 'rep':*"]


def test_punctuation_splits_lexemes_and_never_reaches_the_tsquery() -> None:
    assert compile_query("o'brien").params == ["'o' <-> 'brien'"]
    assert compile_query("a&b|!c:*").params == ["'a' <-> 'b' <-> 'c':*"]
    assert compile_query("x\\y").params == ["'x' <-> 'y'"]


def test_unicode_letters_are_kept_and_lower_cased() -> None:
    assert compile_query("Größe ÉTÉ").params == ["'größe'", "'été'"]


def test_digits_and_clock_times_are_plain_words() -> None:
    assert compile_query("10:30").params == ["'10' <-> '30'"]


def test_empty_query_matches_everything() -> None:
    assert compile_query("   ") == CompiledQuery("TRUE", [], NO_RANK_SQL)


def test_first_param_offsets_the_placeholders() -> None:
    compiled = compile_query("a from:b", first_param=3)
    assert compiled.where_sql == f"({fts(3)} AND m.from_addr ILIKE $4)"
    assert compiled.rank_sql == "ts_rank(m.search_vector, to_tsquery('simple', $3))"


# --- OR, negation, parentheses --------------------------------------------------------------------


def test_or_binds_tighter_than_implicit_and() -> None:
    assert parse_query("a OR b c") == And((
        Or((FullText((Lexeme("a"),)), FullText((Lexeme("b"),)))),
        FullText((Lexeme("c"),)),
    ))
    assert compile_query("a OR b c").where_sql == f"(({fts(1)} OR {fts(2)}) AND {fts(3)})"


def test_lower_case_or_is_a_word() -> None:
    assert compile_query("a or b").params == ["'a'", "'or'", "'b'"]


def test_negation_wraps_in_not_and_is_left_out_of_the_rank() -> None:
    compiled = compile_query("report -draft")
    assert compiled.where_sql == f"({fts(1)} AND NOT ({fts(2)}))"
    assert compiled.rank_sql == "ts_rank(m.search_vector, to_tsquery('simple', $1))"


def test_double_negation_counts_for_the_rank_again() -> None:
    compiled = compile_query("--x")
    assert compiled.where_sql == f"NOT (NOT ({fts(1)}))"
    assert compiled.rank_sql == "ts_rank(m.search_vector, to_tsquery('simple', $1))"


def test_hyphen_inside_a_word_is_not_negation() -> None:
    assert compile_query("e-mail").params == ["'e' <-> 'mail'"]


def test_parentheses_group_and_negate() -> None:
    compiled = compile_query("(a b) OR -(c OR d)")
    assert compiled.where_sql == f"(({fts(1)} AND {fts(2)}) OR NOT (({fts(3)} OR {fts(4)})))"
    assert parse_query("-(c)") == Not(FullText((Lexeme("c"),)))


def test_negated_field_term() -> None:
    compiled = compile_query('-from:"noreply@"')
    assert compiled.where_sql == "NOT (m.from_addr ILIKE $1)"
    assert compiled.rank_sql == NO_RANK_SQL


# --- field terms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "column"), [("from", "m.from_addr"), ("to", "m.to_addrs"),
                                               ("cc", "m.cc_addrs")])
def test_address_fields_are_substring_matches(field: str, column: str) -> None:
    compiled = compile_query(f"{field}:bob@example.com")
    assert compiled.where_sql == f"{column} ILIKE $1"
    assert compiled.params == ["%bob@example.com%"]


def test_address_field_escapes_like_wildcards_and_takes_a_phrase() -> None:
    assert compile_query('from:"John_Smith 100%"').params == ["%John\\_Smith 100\\%%"]
    assert compile_query("to:a\\b").params == ["%a\\\\b%"]
    assert compile_query("FROM:bob*").params == ["%bob%"]


def test_subject_and_body_limit_the_lexemes_to_their_weight() -> None:
    compiled = compile_query('subject:"re: budget" body:draft*')
    assert compiled.where_sql == f"({fts(1)} AND {fts(2)})"
    assert compiled.params == ["'re':A <-> 'budget':A", "'draft':*C"]


def test_in_folder_is_a_mailbox_name_parameter() -> None:
    assert compile_query('in:"Work/Projects 2024"') == CompiledQuery("mb.name = $1", ["Work/Projects 2024"],
                                                                     NO_RANK_SQL)


def test_in_inbox_is_case_insensitive() -> None:
    assert compile_query("in:inbox").params == ["INBOX"]
    assert compile_query("in:Archive").params == ["Archive"]


@pytest.mark.parametrize(("query", "sql"), [
    ("is:unread", "NOT ('\\Seen' = ANY(m.flags))"),
    ("is:read", "('\\Seen' = ANY(m.flags))"),
    ("is:starred", "('\\Flagged' = ANY(m.flags))"),
    ("IS:Answered", "('\\Answered' = ANY(m.flags))"),
    ("has:attachment", "m.has_attachments"),
    ("has:attachments", "m.has_attachments"),
])
def test_flag_and_attachment_terms_have_no_parameters(query: str, sql: str) -> None:
    assert compile_query(query) == CompiledQuery(sql, [], NO_RANK_SQL)


def test_dates_are_utc_midnights() -> None:
    compiled = compile_query("after:2024-01-31 before:2024-02-29")
    assert compiled.where_sql == "(m.internal_date >= $1 AND m.internal_date < $2)"
    assert compiled.params == [datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)]


@pytest.mark.parametrize(("value", "size"), [("500", 500), ("10k", 10240), ("10KB", 10240),
                                             ("5M", 5 * 1024**2), ("2g", 2 * 1024**3), ("7b", 7)])
def test_sizes_take_binary_units(value: str, size: int) -> None:
    assert compile_query(f"larger:{value}") == CompiledQuery("m.size > $1", [size], NO_RANK_SQL)
    assert compile_query(f"smaller:{value}").where_sql == "m.size < $1"


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "message", "position"), [
    ("invoice frm:bob", 'unknown field "frm:"', 8),
    ('report "q3 numbers', "unclosed quote", 7),
    ('from:"bob', "unclosed quote", 5),
    ("x before:2024-13-01", 'bad date "2024-13-01" (expected YYYY-MM-DD)', 2),
    ("after:2023-02-29", 'bad date "2023-02-29" (expected YYYY-MM-DD)', 0),
    ("after:yesterday", 'bad date "yesterday" (expected YYYY-MM-DD)', 0),
    ("larger:10x", 'bad size "10x" (expected e.g. 500, 10k, 5M, 1G)', 0),
    ("smaller:999999999999999g", 'size too large "999999999999999g"', 0),
    ("is:important", 'unknown value "is:important" (expected unread, read, starred or answered)', 0),
    ("has:pdf", 'unknown value "has:pdf" (expected attachment)', 0),
    ("a filename:report.pdf", "filename: is not searchable yet", 2),
    ("from:", "from: needs a value", 0),
    ('in:" "', "in: needs a value", 0),
    ("a -", "nothing to negate after -", 2),
    ("(a -)", "nothing to negate after -", 3),
    ("OR a", "OR needs a term before it", 0),
    ("a OR", "OR needs a term after it", 2),
    ("a OR OR b", "OR needs a term after it", 2),
    ("(a OR) b", "OR needs a term after it", 3),
    ("(a b", "unclosed (", 0),
    ("a b)", "unmatched )", 3),
    ("()", "empty parentheses", 0),
    ("a !!!", 'nothing to search for in "!!!"', 2),
    ('""', 'nothing to search for in ""', 0),
    ("a\x00b", "invalid character", 1),
    ("a \ud800", "invalid character", 2),
])
def test_malformed_query_says_what_and_where(query: str, message: str, position: int) -> None:
    with pytest.raises(QueryError) as raised:
        compile_query(query)
    assert (raised.value.message, raised.value.position) == (message, position)
    assert str(raised.value) == f"{message} at {position}"


def test_unknown_field_error_quotes_the_field_as_written() -> None:
    with pytest.raises(QueryError, match=r'^unknown field "Frm:" at 0$'):
        compile_query("Frm:bob")


def test_query_length_limit() -> None:
    longest = ("a" * 19 + " ") * 50
    assert len(longest) == MAX_QUERY_LENGTH
    assert len(compile_query(longest).params) == 50
    with pytest.raises(QueryError) as raised:
        compile_query(longest + "b")
    assert str(raised.value) == f"query too long (at most {MAX_QUERY_LENGTH} characters) at {MAX_QUERY_LENGTH}"


def test_long_word_is_rejected() -> None:
    with pytest.raises(QueryError, match="word too long") as raised:
        compile_query("x " + "a" * 201)
    assert raised.value.position == 2


def test_term_count_limit() -> None:
    assert len(compile_query(" ".join(["w"] * MAX_TERMS)).params) == MAX_TERMS
    with pytest.raises(QueryError, match=f"too many terms \\(at most {MAX_TERMS}\\)") as raised:
        compile_query(" ".join(["w"] * (MAX_TERMS + 1)))
    assert raised.value.position == 2 * MAX_TERMS


def test_deep_nesting_is_an_error_not_a_recursion_error() -> None:
    with pytest.raises(QueryError, match="too deeply nested"):
        compile_query("(" * 400 + "a" + ")" * 400)
    with pytest.raises(QueryError, match="too deeply nested"):
        compile_query("-" * 900 + "a")


# --- any input: compiled and parameterised, or a QueryError -----------------------------------------

# Every word the compiler may write into where_sql / rank_sql; nothing else may appear there.
SQL_WORDS = frozenset({
    "m", "mb", "search_vector", "to_tsquery", "simple", "from_addr", "to_addrs", "cc_addrs", "ILIKE", "name",
    "flags", "ANY", "Seen", "Flagged", "Answered", "has_attachments", "internal_date", "size", "AND", "OR",
    "NOT", "TRUE", "ts_rank", "real",
})
SQL_PUNCTUATION = set(" ().@=<>'\\,|:$0123456789")

query_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from([
        "a", "Word", "wild*", '"two words"', '"', "OR", "-", "(", ")", "from:", "subject:", "in:", "is:unread",
        "is:x", "has:attachment", "before:2024-01-01", "after:2024-02-30", "larger:10k", "smaller:5M",
        "frm:", "filename:x", "simple", "ILIKE", "'; DROP TABLE messages; --", "$1", "\\", "%_", " ",
    ]), max_size=30).map("".join),
)


def _alpha_runs(value: str) -> list[str]:
    return re.findall(r"[^\W\d_]{3,}", value)


@settings(max_examples=500)
@given(query_text)
def test_any_input_compiles_to_parameterised_sql_or_raises_query_error(text: str) -> None:
    try:
        compiled = compile_query(text)
    except QueryError as error:
        assert error.message
        assert error.position is None or 0 <= error.position <= len(text)
        return
    for sql in (compiled.where_sql, compiled.rank_sql):
        assert set(re.findall(r"[A-Za-z_]+", sql)) <= SQL_WORDS
        assert set(re.sub(r"[A-Za-z_]+", "", sql)) <= SQL_PUNCTUATION
        assert set(re.findall(r"'[^']*'", sql)) <= {"'simple'", "'\\Seen'", "'\\Flagged'", "'\\Answered'"}
        placeholders = [int(n) for n in re.findall(r"\$(\d+)", sql)]
        assert all(1 <= n <= len(compiled.params) for n in placeholders)
    # What is left of the SQL once our own words are taken out must hold no user text.
    residue = re.sub(r"[A-Za-z_]+", lambda word: "" if word[0] in SQL_WORDS else word[0], compiled.where_sql)
    for value in compiled.params:
        assert type(value) in (str, int, datetime)
        if isinstance(value, str):
            value.encode("utf-8")  # a lone surrogate could not be sent
            assert "\x00" not in value
            for run in _alpha_runs(value):
                assert run.lower() not in residue.lower()


@settings(max_examples=300)
@given(st.text(max_size=100))
def test_tsquery_parameters_hold_only_quoted_alphanumeric_lexemes(text: str) -> None:
    try:
        compiled = compile_query(text)
    except QueryError:
        return
    lexeme = r"'[^\W_]+'(:\*?[AC]?)?"
    for value in compiled.params:
        if isinstance(value, str) and value.startswith("'"):
            assert re.fullmatch(rf"{lexeme}( <-> {lexeme})*", value), value
