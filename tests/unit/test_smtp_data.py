"""The DATA stream without I/O (whymail.smtp.data): end of message, dot-unstuffing, size limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.smtp.data import TERMINATOR, DataReceiver, unstuff


def _stuff(lines: list[bytes]) -> bytes:
    """What a client sends for `lines` (each without its CRLF): dot-stuffed, then CRLF.CRLF."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def _feed_all(receiver: DataReceiver, chunks: list[bytes]) -> int:
    """Feed chunks until the message ends; the number of stream bytes it took."""
    used = 0
    for chunk in chunks:
        taken = receiver.feed(chunk)
        used += taken
        if receiver.done:
            break
        assert taken == len(chunk)
    return used


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _reference(stream: bytes) -> tuple[bytes, int] | None:
    """aiosmtpd's line-by-line reading (RFC 5321 §4.1.1.4, §4.5.2): (content, bytes used) or None."""
    content, start = [], 0
    while True:
        end = stream.find(b"\r\n", start)
        if end == -1:
            return None
        line = stream[start : end + 2]
        if line == b".\r\n":
            return b"".join(content), end + 2
        content.append(line[1:] if line.startswith(b".") else line)
        start = end + 2


# --- examples ------------------------------------------------------------------------------------


def test_a_lone_dot_right_away_is_an_empty_message() -> None:
    receiver = DataReceiver()
    assert receiver.feed(b".\r\n") == 3
    assert receiver.done
    assert receiver.content() == b""


def test_lines_keep_their_crlf_and_lose_the_final_dot() -> None:
    receiver = DataReceiver()
    receiver.feed(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert receiver.content() == b"Subject: x\r\n\r\nbody\r\n"


def test_the_first_dot_of_each_line_that_starts_with_one_is_removed() -> None:
    receiver = DataReceiver()
    receiver.feed(b"..first\r\nmid.dle\r\n..\r\n...three\r\n.\r\n")
    assert receiver.content() == b".first\r\nmid.dle\r\n.\r\n..three\r\n"


@pytest.mark.parametrize(
    "fake",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CRLF.CR", "CR.CRLF"],
)
def test_only_crlf_dot_crlf_ends_the_message_not_bare_lf_or_cr(fake: bytes) -> None:
    """SMTP smuggling (CVE-2023-51766): anything but CRLF "." CRLF is content."""
    stream = b"a" + fake + b"MAIL FROM:<evil@example.org>\r\n.\r\n"
    receiver = DataReceiver()
    assert receiver.feed(stream) == len(stream)
    assert receiver.done
    # Content, with the usual unstuffing: a "." right after a CRLF starts a line and is removed.
    expected = b"a" + fake.replace(b"\r\n.", b"\r\n") + b"MAIL FROM:<evil@example.org>\r\n"
    assert receiver.content() == expected == _reference(stream)[0]  # type: ignore[index]


def test_a_terminator_split_over_one_byte_chunks_is_found() -> None:
    stream = b"x\r\n..y\r\n.\r\n"
    receiver = DataReceiver()
    assert _feed_all(receiver, [bytes([b]) for b in stream]) == len(stream)
    assert receiver.content() == b"x\r\n.y\r\n"


def test_bytes_after_the_terminator_are_not_taken() -> None:
    receiver = DataReceiver()
    assert receiver.feed(b"hi\r\n.\r\nMAIL FROM:<a@b.example>\r\n") == len(b"hi\r\n.\r\n")
    assert receiver.content() == b"hi\r\n"
    with pytest.raises(ValueError):
        receiver.feed(b"more")


def test_a_line_far_longer_than_1000_octets_is_kept_whole() -> None:
    receiver = DataReceiver()
    line = b"y" * 50_000 + b"\r\n"
    receiver.feed(line[:1000])
    receiver.feed(line[1000:] + b".\r\n")
    assert receiver.content() == line


def test_content_at_the_limit_is_kept_and_one_byte_more_is_too_big() -> None:
    body = b"a" * 8 + b"\r\n"  # 10 bytes of dot-stuffed content
    at_limit = DataReceiver(limit=10)
    at_limit.feed(body + b".\r\n")
    assert at_limit.done and not at_limit.too_big
    assert at_limit.content() == body
    over = DataReceiver(limit=9)
    assert _feed_all(over, [body, b".", b"\r", b"\n"]) == len(body) + 3
    assert over.done and over.too_big
    with pytest.raises(ValueError):
        over.content()


def test_the_limit_counts_dot_stuffed_bytes_like_aiosmtpd() -> None:
    receiver = DataReceiver(limit=4)
    receiver.feed(b"..a\r\n.\r\n")  # 5 bytes stuffed, 4 after unstuffing
    assert receiver.too_big


def test_no_limit_when_zero_or_none() -> None:
    for limit in (0, None):
        receiver = DataReceiver(limit=limit)
        receiver.feed(b"z" * 100_000 + b"\r\n.\r\n")
        assert len(receiver.content()) == 100_002


def test_content_before_the_end_is_an_error() -> None:
    receiver = DataReceiver()
    receiver.feed(b"no end yet\r\n")
    with pytest.raises(ValueError):
        receiver.content()


def test_unstuff() -> None:
    assert unstuff(b"") == b""
    assert unstuff(b".a\r\n..b\r\nc.\r\n") == b"a\r\n.b\r\nc.\r\n"


# --- properties ----------------------------------------------------------------------------------

def _without_crlf(data: bytes) -> bytes:
    """A line's content may hold a bare CR or LF, never CRLF (one pass of replace can create one)."""
    while b"\r\n" in data:
        data = data.replace(b"\r\n", b"\r")
    return data


_LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
# Lines rich in what matters: dots, CR, LF (a bare CR or LF inside a line is content).
_TRICKY_LINE = st.lists(st.sampled_from([b".", b"..", b"\r", b"\n", b"a", b"\xc3\xa9", b" "]), max_size=8).map(
    b"".join
).map(_without_crlf)


@given(
    lines=st.lists(st.one_of(_LINE, _TRICKY_LINE), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    tail=st.binary(max_size=20),
)
def test_any_body_dot_stuffed_and_split_anywhere_comes_back_exactly(
    lines: list[bytes], cuts: list[int], tail: bytes
) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    stream = _stuff(lines)
    receiver = DataReceiver()
    used = _feed_all(receiver, _split(stream + tail, cuts))
    assert receiver.done
    assert used == len(stream)  # not one byte of what follows (a pipelined command)
    assert receiver.size == len(stream)
    assert receiver.content() == body


@given(
    stream=st.lists(st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"x", b"\r\n.\r\n"]), max_size=40).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
)
def test_the_message_ends_at_the_first_crlf_dot_crlf_as_line_by_line_reading_says(
    stream: bytes, cuts: list[int]
) -> None:
    receiver = DataReceiver()
    used = _feed_all(receiver, _split(stream, cuts))
    expected = _reference(stream)
    if TERMINATOR in b"\r\n" + stream:
        assert expected is not None
        content, end = expected
        assert (receiver.done, used) == (True, end)
        assert end == (b"\r\n" + stream).find(TERMINATOR) + len(TERMINATOR) - 2
        assert receiver.content() == content
    else:
        assert expected is None
        assert (receiver.done, used) == (False, len(stream))


@given(
    lines=st.lists(_TRICKY_LINE, max_size=20),
    limit=st.integers(min_value=1, max_value=120),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
)
def test_too_big_exactly_when_the_dot_stuffed_content_exceeds_the_limit(
    lines: list[bytes], limit: int, cuts: list[int]
) -> None:
    stream = _stuff(lines)
    receiver = DataReceiver(limit=limit)
    assert _feed_all(receiver, _split(stream, cuts)) == len(stream)
    assert receiver.done
    assert receiver.too_big == (len(stream) - 3 > limit)
    if not receiver.too_big:
        assert receiver.content() == b"".join(line + b"\r\n" for line in lines)
