"""Property: `parse_command(encode_command(cmd)) == cmd` for generated commands."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.imap import commands as c
from whymail.imap.command_encoder import encode_command
from whymail.imap.errors import ImapParseError
from whymail.imap.parser import CommandEvent, CommandReader, ContinuationNeeded, parse_command

from .strategies import commands


@settings(max_examples=400)
@given(commands)
def test_parse_inverts_encode(cmd: c.Command) -> None:
    assert parse_command(encode_command(cmd)) == cmd


@given(commands, st.booleans())
def test_reader_reassembles_encoded_command(cmd: c.Command, literal_plus: bool) -> None:
    wire = encode_command(cmd, literal_plus=literal_plus)
    reader = CommandReader()
    events = list(reader.feed(wire))
    assert events[-1] == CommandEvent(cmd)
    continuations = [e for e in events if isinstance(e, ContinuationNeeded)]
    assert (not continuations) == (literal_plus or b"}\r\n" not in wire)
    assert reader.buffered_size == 0


@given(st.binary(max_size=200))
def test_parse_command_only_raises_parse_errors(data: bytes) -> None:
    try:
        parse_command(data)
    except ImapParseError as exc:
        assert exc.text.isascii()


@given(commands, st.data())
def test_truncated_or_mutated_commands_only_raise_parse_errors(cmd: c.Command, data: st.DataObject) -> None:
    wire = bytearray(encode_command(cmd))
    cut = data.draw(st.integers(0, len(wire)))
    position = data.draw(st.integers(0, max(0, len(wire) - 1)))
    wire[position] = data.draw(st.integers(0, 255))
    for candidate in (bytes(wire), bytes(wire[:cut])):
        try:
            parse_command(candidate)
        except ImapParseError:
            pass


def test_encode_examples() -> None:
    assert encode_command(c.Login("a1", "fred smith", 'p"w\\')) == b'a1 LOGIN "fred smith" "p\\"w\\\\"\r\n'
    assert encode_command(c.Login("a1", "jörg", "x")) == b"a1 LOGIN {5}\r\nj\xc3\xb6rg x\r\n"
    assert encode_command(c.Login("a1", "", "x\r\n"), literal_plus=True) == b'a1 LOGIN "" {3+}\r\nx\r\n\r\n'
    assert encode_command(c.Select("a", "Entwürfe", condstore=True)) == b"a SELECT Entw&APw-rfe (CONDSTORE)\r\n"
    assert encode_command(c.List("a", "", ("*",))) == b'a LIST "" *\r\n'
