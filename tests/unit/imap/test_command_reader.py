"""`CommandReader`: incremental reading, literals, limits, IDLE/AUTHENTICATE modes, resynchronisation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.imap import commands as c
from whymail.imap.errors import ImapParseError
from whymail.imap.parser import (
    CommandEvent,
    CommandReader,
    ContinuationNeeded,
    IdleDone,
    LineEvent,
    ParseErrorEvent,
    ReaderEvent,
)
from whymail.imap.sequence import parse_sequence_set


def _feed_all(reader: CommandReader, data: bytes) -> list[ReaderEvent]:
    return list(reader.feed(data))


def test_commands_split_across_chunks_byte_by_byte() -> None:
    reader = CommandReader()
    events: list[ReaderEvent] = []
    for byte in b"a1 NOOP\r\na2 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n":
        events += reader.feed(bytes([byte]))
    assert events == [
        CommandEvent(c.Noop("a1")),
        ContinuationNeeded("a2", 5),
        CommandEvent(c.Login("a2", "alice", "secret")),
    ]


def test_literal_containing_crlf_and_braces_is_taken_verbatim() -> None:
    body = b"line {3}\r\nmore\r\n"
    events = _feed_all(CommandReader(), b"A APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert events == [CommandEvent(c.Append("A", "INBOX", (c.AppendMessage((), None, body),)))]


def test_bare_lf_line_endings_are_accepted() -> None:
    assert _feed_all(CommandReader(), b"a NOOP\nb LOGIN {1}\nx y\n") == [
        CommandEvent(c.Noop("a")),
        ContinuationNeeded("b", 1),
        CommandEvent(c.Login("b", "x", "y")),
    ]


def test_empty_lines_between_commands_are_ignored() -> None:
    assert _feed_all(CommandReader(), b"\r\n\r\na NOOP\r\n") == [CommandEvent(c.Noop("a"))]


def test_parse_error_then_next_command() -> None:
    events = _feed_all(CommandReader(), b"a FROB\r\nb NOOP\r\n")
    assert isinstance(events[0], ParseErrorEvent)
    assert events[0].error.tag == "a"
    assert events[1] == CommandEvent(c.Noop("b"))


def test_too_long_line_is_an_error_and_reading_resumes_after_crlf() -> None:
    reader = CommandReader(max_line=100)
    events = _feed_all(reader, b"t1 NOOP " + b"x" * 150)
    assert len(events) == 1 and isinstance(events[0], ParseErrorEvent)
    assert events[0].error.tag == "t1" and "too long" in events[0].error.text
    assert reader.buffered_size < 100
    events = _feed_all(reader, b"y" * 1000 + b"\r\nt2 NOOP\r\n")
    assert events == [CommandEvent(c.Noop("t2"))]


def test_too_large_synchronising_literal_is_refused_without_continuation() -> None:
    reader = CommandReader(max_literal=10)
    events = _feed_all(reader, b"a LOGIN {11}\r\n")
    assert len(events) == 1 and isinstance(events[0], ParseErrorEvent)
    assert events[0].error.code == "TOOBIG" and events[0].error.tag == "a"
    # RFC 3501 §7.5: the client does not send the literal after a BAD; the next line is a new command.
    assert _feed_all(reader, b"b NOOP\r\n") == [CommandEvent(c.Noop("b"))]


def test_too_large_non_synchronising_literal_is_skipped() -> None:
    # RFC 7888 §4: the client sends the literal anyway; its bytes must not be read as commands.
    reader = CommandReader(max_literal=10)
    payload = b"c NOOP\r\n" * 20
    events = _feed_all(reader, b"a LOGIN {%d+}\r\n" % len(payload) + payload + b" {2+}\r\nxx rest\r\nb NOOP\r\n")
    assert [type(e) for e in events] == [ParseErrorEvent, CommandEvent]
    assert events[1] == CommandEvent(c.Noop("b"))
    assert reader.buffered_size == 0


def test_append_has_a_larger_literal_limit() -> None:
    reader = CommandReader(max_literal=10, max_append_literal=100)
    data = b"x" * 50
    events = _feed_all(reader, b"a APPEND INBOX {50+}\r\n" + data + b"\r\n")
    assert events == [CommandEvent(c.Append("a", "INBOX", (c.AppendMessage((), None, data),)))]
    events = _feed_all(reader, b"b APPEND INBOX {101}\r\n")
    assert isinstance(events[0], ParseErrorEvent) and events[0].error.code == "TOOBIG"


def test_idle_done_pipelined_in_the_same_chunk() -> None:
    reader = CommandReader()
    seen: list[ReaderEvent] = []
    for event in reader.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n"):
        seen.append(event)
        if event == CommandEvent(c.Idle("a")):
            reader.expect_idle_done()
    assert seen == [CommandEvent(c.Idle("a")), IdleDone(), CommandEvent(c.Noop("b"))]


def test_anything_but_done_during_idle_is_an_error() -> None:
    reader = CommandReader()
    reader.expect_idle_done()
    events = _feed_all(reader, b"b NOOP\r\nc NOOP\r\n")
    assert isinstance(events[0], ParseErrorEvent) and "DONE" in events[0].error.text
    assert events[1] == CommandEvent(c.Noop("c"))


def test_authenticate_continuation_lines_are_raw() -> None:
    reader = CommandReader()
    events = iter(reader.feed(b"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nb NOOP\r\n"))
    assert next(events) == CommandEvent(c.Authenticate("a", "PLAIN"))
    reader.expect_line()
    assert next(events) == LineEvent(b"AGFsaWNlAHNlY3JldA==")
    assert next(events) == CommandEvent(c.Noop("b"))


def test_unconsumed_events_stay_buffered() -> None:
    reader = CommandReader()
    first = next(iter(reader.feed(b"a NOOP\r\nb CHECK\r\n")))
    assert first == CommandEvent(c.Noop("a"))
    assert _feed_all(reader, b"") == [CommandEvent(c.Check("b"))]


def test_uid_fetch_with_literal_header_field_names() -> None:
    events = _feed_all(CommandReader(), b"a UID FETCH 1:* (BODY[HEADER.FIELDS ({4+}\r\nFrom)])\r\n")
    assert isinstance(events[0], CommandEvent)
    assert events[0].command.sequence_set == parse_sequence_set("1:*")  # type: ignore[union-attr]


# --- properties -----------------------------------------------------------------------------------

LIMITS = {"max_line": 200, "max_literal": 100, "max_append_literal": 1000}
VALID = b"z9 NOOP\r\n"
noisy_bytes = st.binary(max_size=600) | st.lists(
    st.sampled_from([b"a ", b"APPEND ", b"{", b"}", b"+", b"5", b"50", b"\r\n", b"\n", b"x", b'"', b"(", b"\\"]),
    max_size=80,
).map(b"".join)


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    out.append(data[pos:])
    return out


def _check_events(events: list[ReaderEvent]) -> None:
    for event in events:
        assert isinstance(event, CommandEvent | ContinuationNeeded | ParseErrorEvent | LineEvent | IdleDone)
        if isinstance(event, ParseErrorEvent):
            assert isinstance(event.error, ImapParseError)
            assert event.error.text.isascii()


@settings(max_examples=300)
@given(noisy_bytes, st.lists(st.integers(1, 64), max_size=30))
def test_random_input_only_produces_events_with_bounded_memory(garbage: bytes, sizes: list[int]) -> None:
    reader = CommandReader(**LIMITS)
    for chunk in _chunks(garbage, sizes):
        events = list(reader.feed(chunk))
        _check_events(events)
        assert reader.buffered_size <= LIMITS["max_line"] + LIMITS["max_append_literal"] + len(chunk) + 64


@settings(max_examples=300)
@given(noisy_bytes.map(lambda b: b.replace(b"{", b"")), st.lists(st.integers(1, 64), max_size=30))
def test_valid_command_after_garbage_line_is_parsed(garbage: bytes, sizes: list[int]) -> None:
    reader = CommandReader(**LIMITS)
    events: list[ReaderEvent] = []
    for chunk in _chunks(garbage + b"\r\n" + VALID, sizes):
        events += reader.feed(chunk)
    _check_events(events)
    assert events[-1] == CommandEvent(c.Noop("z9"))


@settings(max_examples=300)
@given(noisy_bytes, st.lists(st.integers(1, 64), max_size=30))
def test_reader_recovers_after_any_garbage_once_pending_literals_are_flushed(
    garbage: bytes, sizes: list[int]
) -> None:
    # Garbage may announce a literal; padding longer than any allowed literal flushes it, and the
    # padding line itself is then rejected as too long, so the next command starts clean.
    padding = b"x" * (LIMITS["max_append_literal"] + LIMITS["max_line"] + 1) + b"\r\n"
    reader = CommandReader(**LIMITS)
    events: list[ReaderEvent] = []
    for chunk in _chunks(garbage + b"\r\n" + padding + VALID, sizes):
        events += reader.feed(chunk)
    _check_events(events)
    assert events[-1] == CommandEvent(c.Noop("z9"))
