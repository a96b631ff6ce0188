"""The search query language (issue 7): tokenizer, parser and the AST it produces.

Grammar (OR binds tighter than the implicit AND, as in Gmail: `a OR b c` is `(a OR b) AND c`):

    query    := and_expr
    and_expr := or_expr*
    or_expr  := unary ("OR" unary)*
    unary    := "-" unary | primary          # "-" only negates when it starts a token
    primary  := "(" and_expr ")" | term
    term     := word | "phrase" | field ":" (word | "phrase")

Positions in errors are 0-based character offsets into the query text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_QUERY_LENGTH = 1000
MAX_TERMS = 50
MAX_DEPTH = 32  # parentheses and negations; keeps the recursive parser far from the recursion limit
MAX_LEXEME_LENGTH = 200
_MAX_BIGINT = 2**63 - 1

FIELDS = frozenset({"from", "to", "cc", "subject", "body", "filename", "in", "is", "has",
                    "before", "after", "larger", "smaller"})
_FIELD_TERM = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_SIZE = re.compile(r"([0-9]{1,15})([kmg]?)b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# is:<value> -> (IMAP system flag, whether the flag must be set)
_IS_VALUES = {
    "unread": ("\\Seen", False),
    "read": ("\\Seen", True),
    "starred": ("\\Flagged", True),
    "answered": ("\\Answered", True),
}
_HAS_VALUES = frozenset({"attachment", "attachments"})


class QueryError(ValueError):
    """A malformed query: `message` says what is wrong, `position` where (0-based offset, or None)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        super().__init__(message if position is None else f"{message} at {position}")


# --- AST ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lexeme:
    word: str  # lower-case letters and digits only
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class FullText:
    """Consecutive lexemes (one word, or a phrase) in the search vector; weight limits it to a part:
    "A" the subject, "C" the body, None anywhere."""
    lexemes: tuple[Lexeme, ...]
    weight: str | None = None


@dataclass(frozen=True, slots=True)
class AddressMatch:
    field: str  # "from", "to" or "cc"
    text: str


@dataclass(frozen=True, slots=True)
class InFolder:
    name: str


@dataclass(frozen=True, slots=True)
class FlagIs:
    flag: str  # an IMAP system flag, from _IS_VALUES only
    present: bool


@dataclass(frozen=True, slots=True)
class HasAttachment:
    pass


@dataclass(frozen=True, slots=True)
class DateBound:
    before: bool  # True: internal_date < at; False: internal_date >= at
    at: datetime


@dataclass(frozen=True, slots=True)
class SizeBound:
    larger: bool  # True: size > limit; False: size < limit
    limit: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]  # empty: matches everything


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


Node = FullText | AddressMatch | InFolder | FlagIs | HasAttachment | DateBound | SizeBound | Not | And | Or


# --- tokenizer ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "term", "or", "not", "(", ")"
    position: int
    field: str | None = None  # lower-case field name of a field term
    value: str = ""


def _shown(text: str) -> str:
    """User text echoed in an error message, cut short."""
    return text if len(text) <= 40 else text[:37] + "..."


def _check_characters(text: str) -> None:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded to UTF-8 for the wire.
    for position, char in enumerate(text):
        if char == "\x00" or "\ud800" <= char <= "\udfff":
            raise QueryError("invalid character", position)


def _read_phrase(text: str, start: int) -> tuple[str, int]:
    """The text between the quote at `start` and the next quote, and the offset after it."""
    end = text.find('"', start + 1)
    if end < 0:
        raise QueryError("unclosed quote", start)
    return text[start + 1:end], end + 1


def tokenize(text: str) -> list[Token]:
    """Split a query into tokens; raises QueryError for unknown fields and unclosed quotes."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(Token(char, i))
            i += 1
        elif char == "-":
            if i + 1 >= n or text[i + 1].isspace() or text[i + 1] == ")":
                raise QueryError("nothing to negate after -", i)
            tokens.append(Token("not", i))
            i += 1
        elif char == '"':
            value, end = _read_phrase(text, i)
            tokens.append(Token("term", i, None, value))
            i = end
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in '()"':
                i += 1
            word = text[start:i]
            if word == "OR":
                tokens.append(Token("or", start))
                continue
            field_term = _FIELD_TERM.fullmatch(word)
            if field_term is None:
                tokens.append(Token("term", start, None, word))
                continue
            field, value = field_term[1].lower(), field_term[2]
            if field not in FIELDS:
                raise QueryError(f'unknown field "{_shown(field_term[1])}:"', start)
            if not value and i < n and text[i] == '"':
                value, i = _read_phrase(text, i)
            tokens.append(Token("term", start, field, value))
    return tokens


# --- terms ----------------------------------------------------------------------------------------


def _lexemes(value: str, position: int) -> tuple[Lexeme, ...]:
    """Runs of letters and digits of `value`, lower-cased; a word ending in * makes its last run a
    prefix. Everything else separates lexemes, so nothing needs escaping in the tsquery text."""
    lexemes: list[Lexeme] = []
    for word in value.lower().split():
        runs = ["".join(chars) for alnum, chars in itertools.groupby(word, key=str.isalnum) if alnum]
        for index, run in enumerate(runs):
            if len(run) > MAX_LEXEME_LENGTH:
                raise QueryError(f"word too long (at most {MAX_LEXEME_LENGTH} characters)", position)
            lexemes.append(Lexeme(run, prefix=index == len(runs) - 1 and word.endswith("*")))
    if not lexemes:
        raise QueryError(f'nothing to search for in "{_shown(value)}"', position)
    return tuple(lexemes)


def _parse_date(token: Token) -> datetime:
    match = _DATE.fullmatch(token.value)
    try:
        if match is None:
            raise ValueError
        # UTC midnight: the API has no user time zone yet.
        return datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=UTC)
    except ValueError:
        raise QueryError(f'bad date "{_shown(token.value)}" (expected YYYY-MM-DD)', token.position) from None


def _parse_size(token: Token) -> int:
    match = _SIZE.fullmatch(token.value)
    if match is None:
        raise QueryError(f'bad size "{_shown(token.value)}" (expected e.g. 500, 10k, 5M, 1G)', token.position)
    size = int(match[1]) * _SIZE_UNITS[match[2].lower()]
    if size > _MAX_BIGINT:
        raise QueryError(f'size too large "{_shown(token.value)}"', token.position)
    return size


def term_node(token: Token) -> Node:
    """The AST node of one term token."""
    field, value, position = token.field, token.value, token.position
    if field is None:
        return FullText(_lexemes(value, position))
    if not value.strip():
        raise QueryError(f"{field}: needs a value", position)
    match field:
        case "subject":
            return FullText(_lexemes(value, position), weight="A")
        case "body":
            return FullText(_lexemes(value, position), weight="C")
        case "from" | "to" | "cc":
            # A trailing * is accepted for symmetry with words: the match is a substring match anyway.
            text = value.strip().rstrip("*").strip()
            if not text:
                raise QueryError(f"{field}: needs a value", position)
            return AddressMatch(field, text)
        case "filename":
            # Attachment names of delivered mail are not stored yet: attachments.filename is only
            # written for API uploads (messages.has_attachments is all delivery records).
            raise QueryError("filename: is not searchable yet", position)
        case "in":
            name = value.strip()
            # RFC 3501 §5.1: INBOX is case-insensitive; every other name is exact.
            return InFolder("INBOX" if name.upper() == "INBOX" else name)
        case "is":
            known = _IS_VALUES.get(value.lower())
            if known is None:
                raise QueryError(f'unknown value "is:{_shown(value)}" (expected unread, read, starred or '
                                 f"answered)", position)
            return FlagIs(*known)
        case "has":
            if value.lower() not in _HAS_VALUES:
                raise QueryError(f'unknown value "has:{_shown(value)}" (expected attachment)', position)
            return HasAttachment()
        case "before" | "after":
            return DateBound(before=field == "before", at=_parse_date(token))
        case _:  # "larger" | "smaller"
            return SizeBound(larger=field == "larger", limit=_parse_size(token))


# --- parser ---------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.terms = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def and_expr(self) -> list[Node]:
        operands: list[Node] = []
        while (token := self.peek()) is not None and token.kind != ")":
            operands.append(self.or_expr())
        return operands

    def or_expr(self) -> Node:
        operands = [self.unary()]
        while (token := self.peek()) is not None and token.kind == "or":
            self.index += 1
            following = self.peek()
            if following is None or following.kind in ("or", ")"):
                raise QueryError("OR needs a term after it", token.position)
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def unary(self) -> Node:
        token = self.peek()
        assert token is not None  # callers check
        if token.kind == "not":
            self.index += 1
            with self.nested(token):
                return Not(self.unary())
        return self.primary()

    def primary(self) -> Node:
        token = self.tokens[self.index]
        self.index += 1
        if token.kind == "or":
            raise QueryError("OR needs a term before it", token.position)
        if token.kind == "(":
            with self.nested(token):
                operands = self.and_expr()
            closing = self.peek()
            if closing is None:
                raise QueryError("unclosed (", token.position)
            self.index += 1
            if not operands:
                raise QueryError("empty parentheses", token.position)
            return operands[0] if len(operands) == 1 else And(tuple(operands))
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QueryError(f"too many terms (at most {MAX_TERMS})", token.position)
        return term_node(token)

    @contextmanager
    def nested(self, token: Token) -> Iterator[None]:
        """One more level of parentheses or negation while the body runs."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"too deeply nested (at most {MAX_DEPTH} levels)", token.position)
        try:
            yield
        finally:
            self.depth -= 1


def parse_query(text: str) -> Node:
    """The AST of a query; an empty query is `And(())`, which matches everything."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"query too long (at most {MAX_QUERY_LENGTH} characters)", MAX_QUERY_LENGTH)
    _check_characters(text)
    parser = _Parser(tokenize(text))
    operands = parser.and_expr()
    stray = parser.peek()
    if stray is not None:
        raise QueryError("unmatched )", stray.position)
    return operands[0] if len(operands) == 1 else And(tuple(operands))
