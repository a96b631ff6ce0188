"""Message summaries for indexing (whymail.mime.summary)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.mime import MessageSummary, summarize, thread_id
from whymail.mime import summary as summary_module
from whymail.mime.summary import MAX_BODY_BYTES

SIMPLE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org, carol@example.net\r\n"
    b"Cc: dave@example.com\r\n"
    b"Subject: Lunch?\r\n"
    b"Date: Tue, 01 Jul 2025 10:00:00 +0200\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"In-Reply-To: <m0@example.com>\r\n"
    b"References: <root@example.com>\r\n <m0@example.com>\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
)


def _assert_clean(summary: MessageSummary) -> None:
    """Everything must be storable in PostgreSQL text columns as is."""
    for field in ("message_id", "subject", "from_addr", "to_addrs", "cc_addrs", "in_reply_to", "references"):
        value = getattr(summary, field)
        assert isinstance(value, str) and "\0" not in value and "\r" not in value and "\n" not in value
        value.encode("utf-8")
    assert len(summary.subject) <= 998 and len(summary.to_addrs) <= 2000 and len(summary.cc_addrs) <= 2000
    assert "\0" not in summary.body_text
    assert len(summary.body_text.encode("utf-8")) <= MAX_BODY_BYTES
    assert summary.sent_date is None or summary.sent_date.tzinfo is not None


@contextmanager
def _no_safety_net() -> Iterator[None]:
    """Fail instead of letting summarize's catch-all hide a bug in the parser."""

    def fail(msg: str, *args: object, **kwargs: object) -> None:
        raise AssertionError("summarize fell back to its safety net: " + msg % args)

    original = summary_module.log.exception
    summary_module.log.exception = fail  # type: ignore[method-assign]
    try:
        yield
    finally:
        summary_module.log.exception = original  # type: ignore[method-assign]


def test_simple_message_fields() -> None:
    s = summarize(SIMPLE)
    assert s.message_id == "<m1@example.com>"
    assert s.subject == "Lunch?"
    assert s.from_addr == "Alice <alice@example.com>"
    assert s.to_addrs == "bob@example.org, carol@example.net"
    assert s.cc_addrs == "dave@example.com"
    assert s.sent_date == datetime(2025, 7, 1, 8, 0, tzinfo=UTC)
    assert s.sent_date.utcoffset() == timedelta(hours=2)
    assert s.in_reply_to == "<m0@example.com>"
    assert s.references == "<root@example.com> <m0@example.com>"
    assert not s.has_attachments
    assert s.body_text == "See you at noon.\n"


def test_lf_and_crlf_line_endings_give_the_same_summary() -> None:
    assert summarize(SIMPLE.replace(b"\r\n", b"\n")) == summarize(SIMPLE)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        (b"=?UTF-8?B?R3LDvMOfZQ==?=", "Grüße"),
        (b"=?iso-8859-1?q?caf=E9?= au lait", "café au lait"),
        (b"=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2: whitespace between words dropped
        (b"=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),
        (b"Re: =?utf-8?q?=E2=82=AC?= 5", "Re: € 5"),
        (b"=?utf-8?b?4oI=?= =?utf-8?b?rA==?=", "€"),  # a character split across two words
        (b"=?utf-8*de?q?Hallo?=", "Hallo"),  # RFC 2231 language tag
        (b"=?x-unknown?q?plain?=", "plain"),
        (b"=?utf-8?q?broken", "=?utf-8?q?broken"),
        ("Grüße direkt".encode(), "Grüße direkt"),  # 8-bit UTF-8 header (RFC 6532)
        ("caf\xe9".encode("latin-1"), "café"),  # stray Latin-1 bytes
        (b"folded\r\n\tsubject", "folded\tsubject"),
        (b"=?utf-8?q?evil=0D=0ABcc:_x?=", "evil  Bcc: x"),  # decoded CR/LF cannot leak
    ],
)
def test_subject_decoding(header: bytes, expected: str) -> None:
    s = summarize(b"Subject: " + header + b"\r\n\r\nbody")
    assert s.subject == expected
    _assert_clean(s)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=200))
def test_subjects_encoded_by_the_stdlib_decode_back(subject: str) -> None:
    encoded = Header(subject, "utf-8", header_name="Subject").encode().encode("ascii")
    assert summarize(b"Subject: " + encoded + b"\r\n\r\n").subject == subject.strip()


def test_8bit_utf8_addresses() -> None:
    s = summarize("From: Jürgen Müller <jm@example.de>\nTo: Zoë <z@example.de>\n\nx".encode())
    assert s.from_addr == "Jürgen Müller <jm@example.de>"
    assert s.to_addrs == "Zoë <z@example.de>"


def test_repeated_to_headers_are_joined() -> None:
    assert summarize(b"To: a@x\nTo: b@x\n\n").to_addrs == "a@x, b@x"


def test_long_headers_are_truncated() -> None:
    s = summarize(b"Subject: " + b"s" * 5000 + b"\nTo: " + b"t" * 5000 + b"\n\n")
    assert len(s.subject) == 998 and len(s.to_addrs) == 2000


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        (b"Mon, 20 Nov 2023 10:00:00 -0000", datetime(2023, 11, 20, 10, tzinfo=UTC)),
        (
            b"20 Nov 2023 10:00 +0530",
            datetime(2023, 11, 20, 10, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (b"yesterday", None),
        (b"Mon, 99 Foo 99999 99:99:99 +9999", None),
        (b"", None),
    ],
)
def test_dates_are_tz_aware_or_none(date: bytes, expected: datetime | None) -> None:
    assert summarize(b"Date: " + date + b"\n\n").sent_date == expected


def test_header_only_and_empty_messages() -> None:
    s = summarize(b"Subject: only headers\r\nFrom: a@b")
    assert (s.subject, s.from_addr, s.body_text) == ("only headers", "a@b", "")
    empty = summarize(b"")
    assert empty.subject == "" and empty.sent_date is None and empty.body_text == ""


def test_body_without_headers_and_mbox_from_line() -> None:
    assert summarize(b"just some text\nmore\n").body_text == "just some text\nmore\n"
    s = summarize(b"From alice@x Mon Nov 20 10:00:00 2023\nSubject: mbox\n\nhi\n")
    assert (s.subject, s.body_text) == ("mbox", "hi\n")


def _multipart(*parts: bytes, ctype: bytes = b"multipart/mixed", boundary: bytes = b"BOUND") -> bytes:
    out = (
        b"Subject: mp\r\nMIME-Version: 1.0\r\nContent-Type: "
        + ctype
        + b'; boundary="'
        + boundary
        + b'"\r\n\r\n'
    )
    out += b"This is a multi-part message.\r\n"
    for part in parts:
        out += b"--" + boundary + b"\r\n" + part + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nplain body"
HTML = b"Content-Type: text/html\r\n\r\n<html><head><title>t</title><style>p{}</style></head><body><p>Hi &amp; bye</p></body></html>"


def test_alternative_prefers_text_plain() -> None:
    s = summarize(_multipart(TEXT, HTML, ctype=b"multipart/alternative"))
    assert s.body_text == "plain body"
    assert not s.has_attachments


def test_html_only_is_stripped() -> None:
    s = summarize(_multipart(HTML, ctype=b"multipart/alternative"))
    assert s.body_text == "Hi & bye"
    single = summarize(b"Content-Type: text/html\n\n<div>a<br>b</div><script>alert(1)</script>")
    assert single.body_text == "a\nb"


@pytest.mark.parametrize(
    "part",
    [
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment\r\n\r\n%PDF",
        b'Content-Type: application/octet-stream; name="a.bin"\r\n\r\nxx',
        b'Content-Type: image/png\r\nContent-Disposition: inline; filename="p.png"\r\n\r\nxx',
        b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename*=utf-8''n%C3%A4.txt\r\n\r\nnot body",
    ],
)
def test_attachments_are_detected_and_not_in_body(part: bytes) -> None:
    s = summarize(_multipart(TEXT, part))
    assert s.has_attachments
    assert s.body_text == "plain body"


def test_nested_multipart_with_encoded_text_parts() -> None:
    qp = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 =\r\nsoft"
    b64 = (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes("Grüße".encode())
    )
    inner = _multipart(qp, b64, ctype=b"multipart/alternative", boundary=b"inner")
    inner_part = inner.split(b"\r\n", 1)[1]  # drop the Subject line, keep the part headers
    s = summarize(_multipart(inner_part, b"Content-Type: image/gif; name=x.gif\r\n\r\nGIF"))
    assert s.body_text == "café soft\nGrüße"
    assert s.has_attachments


def test_boundary_prefix_lines_are_not_delimiters() -> None:
    s = summarize(_multipart(b"Content-Type: text/plain\r\n\r\nline\r\n--BOUNDARY-like text"))
    assert s.body_text == "line\r\n--BOUNDARY-like text".replace("\r\n", "\n")


def test_multipart_without_boundary_is_read_as_text() -> None:
    assert summarize(b"Content-Type: multipart/mixed\n\nhello").body_text == "hello"


def test_part_count_is_capped_without_leaking_mime_headers_into_the_body() -> None:
    s = summarize(_multipart(*[b"Content-Type: text/plain\r\n\r\nx"] * 2000))
    assert set(s.body_text.split("\n")) == {"x"}


def test_safety_net_turns_a_parser_bug_into_an_empty_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: bytes) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(summary_module, "_split_headers", broken)
    assert summarize(SIMPLE) == MessageSummary("", "", "", "", "", None, "", "", False, "")


def test_unclosed_multipart_keeps_the_last_part() -> None:
    s = summarize(b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\ntail')
    assert s.body_text == "tail"


def test_body_is_capped_at_64_kib() -> None:
    s = summarize(b"Subject: big\n\n" + "é".encode() * 100_000)
    assert len(s.body_text.encode()) <= MAX_BODY_BYTES
    assert len(s.body_text) == MAX_BODY_BYTES // 2


def test_unsafe_codecs_and_nul_bytes_are_harmless() -> None:
    for charset in (b"zlib", b"punycode", b"raw_unicode_escape", b"utf-7", b"nonsense\x00"):
        with _no_safety_net():
            s = summarize(b"Content-Type: text/plain; charset=" + charset + b"\n\n\xff\xfe+ZeVnLIqe-\x00abc")
        _assert_clean(s)


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    with _no_safety_net():
        _assert_clean(summarize(raw))


_fragments = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b"Subject: ",
        b"From: ",
        b"To: ",
        b"Date: ",
        b"Content-Type: multipart/mixed; boundary=b",
        b'Content-Type: multipart/alternative; boundary="b"',
        b"Content-Type: multipart/digest; boundary=c",
        b"Content-Type: text/html; charset=",
        b"Content-Type: text/plain; charset=utf-16",
        b"Content-Disposition: attachment; filename=",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"--b",
        b"--b--",
        b"--c",
        b"=?utf-8?b?",
        b"=?utf-8?q?=C3",
        b"?=",
        b"<script>",
        b"</style>",
        b"&amp;",
        b"\xc3",
        b"\x00",
        b"\xff",
        b" ",
        b"\t",
        b"=",
    ]
)


@given(st.lists(st.one_of(_fragments, st.binary(max_size=8)), max_size=80).map(b"".join))
def test_mime_like_garbage_never_raises(raw: bytes) -> None:
    with _no_safety_net():
        _assert_clean(summarize(raw))


@pytest.mark.parametrize(
    ("message_id", "in_reply_to", "references", "expected"),
    [
        ("<c@x>", "<b@x>", "<a@x> <b@x>", "<a@x>"),
        ("<c@x>", "<b@x>", "", "<b@x>"),
        ("<c@x>", "", "", "<c@x>"),
        ("", "", "", ""),
        ("<c@x>", "Your message <b@x> of Monday", "", "<b@x>"),
        ("<c@x>", "", "  garbage-id  ", "garbage-id"),
    ],
)
def test_thread_id(message_id: str, in_reply_to: str, references: str, expected: str) -> None:
    assert thread_id(message_id, in_reply_to, references) == expected


def test_thread_id_from_a_summary() -> None:
    s = summarize(SIMPLE)
    assert thread_id(s.message_id, s.in_reply_to, s.references) == "<root@example.com>"
