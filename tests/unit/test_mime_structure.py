"""MIME tree, ENVELOPE and BODY/BODYSTRUCTURE values (RFC 3501 §7.4.2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.mime.structure import body_structure, envelope, parse_structure

# --- the message most tests look at ----------------------------------------------------------------

INNER = (
    b"From: Inner Sender <inner@example.org>\r\n"
    b"Subject: inner subject\r\n"
    b"Message-ID: <inner@example.org>\r\n"
    b"\r\n"
    b"inner body line 1\r\n"
    b"inner body line 2\r\n"
)
PDF_B64 = b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\nZW5kc3RyZWFtCg==\r\n"
COMPOSITE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"This is a preamble.\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hello caf=C3=A9\r\n"
    b"second line\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Hello</p>\r\n"
    b"--inner--\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name=report.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="report.pdf"\r\n'
    b"Content-ID: <pdf@example.org>\r\n"
    b"Content-Description: The report\r\n"
    b"\r\n" + PDF_B64 + b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER + b"--outer--\r\n"
    b"epilogue\r\n"
)
INNER_ENVELOPE = (
    None,
    "inner subject",
    (("Inner Sender", None, "inner", "example.org"),),
    (("Inner Sender", None, "inner", "example.org"),),
    (("Inner Sender", None, "inner", "example.org"),),
    None,
    None,
    None,
    None,
    "<inner@example.org>",
)
TEXT_PLAIN = ("TEXT", "PLAIN", ("CHARSET", "utf-8"), None, None, "QUOTED-PRINTABLE", 28, 2)
TEXT_HTML = ("TEXT", "HTML", ("CHARSET", "utf-8"), None, None, "7BIT", 12, 1)
PDF = ("APPLICATION", "PDF", ("NAME", "report.pdf"), "<pdf@example.org>", "The report", "BASE64", 82)
INNER_TEXT = ("TEXT", "PLAIN", ("CHARSET", "us-ascii"), None, None, "7BIT", 36, 2)


def test_composite_body_is_the_non_extensible_form():
    message = (
        "MESSAGE", "RFC822", None, None, None, "7BIT", len(INNER) - 2, INNER_ENVELOPE, INNER_TEXT, 6,
    )  # fmt: skip
    expected = ((TEXT_PLAIN, TEXT_HTML, "ALTERNATIVE"), PDF, message, "MIXED")
    assert body_structure(parse_structure(COMPOSITE), extended=False) == expected


def test_composite_bodystructure_has_extension_data_in_rfc_order():
    no_ext = (None, None, None, None)
    alternative = (
        TEXT_PLAIN + no_ext, TEXT_HTML + no_ext, "ALTERNATIVE", ("BOUNDARY", "inner"), None, None, None,
    )  # fmt: skip
    pdf = PDF + (None, ("ATTACHMENT", ("FILENAME", "report.pdf")), None, None)
    message = (
        "MESSAGE", "RFC822", None, None, None, "7BIT", len(INNER) - 2,
        INNER_ENVELOPE, INNER_TEXT + no_ext, 6, None, None, None, None,
    )  # fmt: skip
    expected = (alternative, pdf, message, "MIXED", ("BOUNDARY", "outer"), None, None, None)
    assert body_structure(parse_structure(COMPOSITE), extended=True) == expected


def test_composite_offsets_cut_each_part_exactly():
    root = parse_structure(COMPOSITE)
    alternative, pdf, message = root.children
    assert COMPOSITE[root.body_start :].startswith(b"This is a preamble.")
    plain, html = alternative.children
    assert COMPOSITE[plain.body_start : plain.body_end] == b"Hello caf=C3=A9\r\nsecond line"
    assert COMPOSITE[html.header_start : html.body_start] == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert COMPOSITE[pdf.body_start : pdf.body_end] == PDF_B64[:-2]
    assert COMPOSITE[message.body_start : message.body_end] == INNER[:-2]
    assert message.message is not None
    assert (
        COMPOSITE[message.message.header_start : message.message.body_start]
        == INNER[: INNER.index(b"\r\n\r\n") + 4]
    )


def test_envelope_keeps_encoded_words_raw():
    env = envelope(COMPOSITE)
    assert env[0] == "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"
    assert env[1] == "=?utf-8?q?caf=C3=A9?= report"
    assert env[5] == ((None, None, "imap", "cac.washington.edu"),)


# --- RFC 3501 examples -----------------------------------------------------------------------------


def _text_of(lines: int, octets: int) -> bytes:
    """A CRLF body of exactly `lines` lines and `octets` octets."""
    width = (octets - 2 * lines) // lines
    body = [b"x" * width for _ in range(lines - 1)]
    body.append(b"y" * (octets - 2 * lines - width * (lines - 1)))
    return b"\r\n".join(body) + b"\r\n"


def test_rfc3501_single_part_example():
    raw = b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n" + _text_of(92, 3028)
    expected = ("TEXT", "PLAIN", ("CHARSET", "US-ASCII"), None, None, "7BIT", 3028, 92)
    assert body_structure(parse_structure(raw), extended=False) == expected


def test_rfc3501_multipart_example():
    first = _text_of(23, 1152)[:-2]  # the CRLF before the delimiter is not part of the body
    second = _text_of(73, 4554)[:-2]
    raw = (
        b"Content-Type: MULTIPART/MIXED; BOUNDARY=b1\r\n\r\n--b1\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n" + first + b"\r\n--b1\r\n"
        b'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME="cc.diff"\r\n'
        b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        b"Content-Description: Compiler diff\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n\r\n" + second + b"\r\n--b1--\r\n"
    )
    expected = (
        ("TEXT", "PLAIN", ("CHARSET", "US-ASCII"), None, None, "7BIT", 1150, 23),
        ("TEXT", "PLAIN", ("CHARSET", "US-ASCII", "NAME", "cc.diff"),
         "<960723163407.20117h@cac.washington.edu>", "Compiler diff", "BASE64", 4552, 73),
        "MIXED",
    )  # fmt: skip
    assert body_structure(parse_structure(raw), extended=False) == expected


def test_rfc3501_envelope_example():
    raw = (
        b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        b"To: imap@cac.washington.edu\r\n"
        b"cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n"
        b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
        b"\r\nbody\r\n"
    )
    gray = (("Terry Gray", None, "gray", "cac.washington.edu"),)
    assert envelope(raw) == (
        "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        "IMAP4rev1 WG mtg summary and minutes",
        gray,
        gray,
        gray,
        ((None, None, "imap", "cac.washington.edu"),),
        ((None, None, "minutes", "CNRI.Reston.VA.US"), ("John Klensin", None, "KLENSIN", "MIT.EDU")),
        None,
        None,
        "<B27397-0100000@cac.washington.edu>",
    )


# --- envelope addresses ----------------------------------------------------------------------------


def test_group_syntax_brackets_members_with_nil_markers():
    env = envelope(
        b'To: Friends: a@x.test, "B, Bee" <b@y.test>;, c@z.test\r\nCc: undisclosed-recipients:;\r\n\r\n'
    )
    assert env[5] == (
        (None, None, "Friends", None),
        (None, None, "a", "x.test"),
        ("B, Bee", None, "b", "y.test"),
        (None, None, None, None),
        (None, None, "c", "z.test"),
    )
    assert env[6] == ((None, None, "undisclosed-recipients", None), (None, None, None, None))


def test_empty_sender_and_reply_to_default_to_from():
    env = envelope(b"From: a@x.test\r\nSender:\r\nReply-To: \r\n\r\n")
    assert env[2] == env[3] == env[4] == ((None, None, "a", "x.test"),)


def test_explicit_reply_to_is_kept():
    env = envelope(b"From: a@x.test\r\nReply-To: r@x.test\r\n\r\n")
    assert env[4] == ((None, None, "r", "x.test"),)
    assert env[3] == env[2]


def test_missing_headers_are_nil():
    assert envelope(b"") == (None,) * 10
    assert envelope(b"\r\nbody") == (None,) * 10


def test_address_odd_forms():
    env = envelope(
        b"From: jdoe@one.test (John Doe)\r\n"
        b"To: <@relay.test,@r2.test:joe@where.test>, localonly, =?utf-8?q?J=C3=B6?= <jo@x.test>\r\n\r\n"
    )
    assert env[2] == (("John Doe", None, "jdoe", "one.test"),)
    assert env[5] == (
        (None, "@relay.test,@r2.test", "joe", "where.test"),
        (None, None, "localonly", "MISSING_DOMAIN"),
        ("=?utf-8?q?J=C3=B6?=", None, "jo", "x.test"),
    )


def test_folded_subject_is_unfolded():
    assert envelope(b"Subject: a long\r\n subject\r\n\r\n")[1] == "a long subject"


# --- parameters, defaults and defects --------------------------------------------------------------


def test_rfc2231_continuations_and_charset():
    raw = (
        b"Content-Type: application/octet-stream;\r\n"
        b'  name*0*=utf-8\'\'%E2%82%AC%20rate;\r\n  name*1=".txt"; title*0="a "; title*1=b\r\n'
        b"Content-Disposition: ATTACHMENT; filename*=iso-8859-1'en'caf%E9.txt\r\n\r\ndata"
    )
    part = parse_structure(raw)
    assert part.params.get("name") == "€ rate.txt"
    assert part.params.get("title") == "a b"
    assert part.disposition_params.get("filename") == "café.txt"
    extended = body_structure(part, extended=True)
    assert extended[2] == ("NAME*", "utf-8''%E2%82%AC%20rate.txt", "TITLE", "a b")
    assert extended[8] == ("ATTACHMENT", ("FILENAME*", "iso-8859-1'en'caf%E9.txt"))


def test_message_without_content_type_is_us_ascii_text():
    part = parse_structure(b"Subject: x\r\n\r\nhello\r\nworld\r\n")
    assert body_structure(part, extended=False) == (
        "TEXT", "PLAIN", ("CHARSET", "us-ascii"), None, None, "7BIT", 14, 2,
    )  # fmt: skip


def test_language_and_location_in_extension_data():
    raw = (
        b"Content-Type: text/plain\r\nContent-Language: en, fr\r\nContent-Location: http://x.test/a\r\n\r\nhi"
    )
    assert body_structure(parse_structure(raw), extended=True)[-4:] == (
        None,
        None,
        ("en", "fr"),
        "http://x.test/a",
    )


def test_unparsable_content_type_is_text_plain():
    part = parse_structure(b"Content-Type: garbage\r\n\r\nhi")
    assert (part.type, part.subtype, part.params.get("charset")) == ("text", "plain", "us-ascii")


def test_multipart_without_boundary_is_text_plain():
    part = parse_structure(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n")
    assert (part.type, part.subtype, part.children) == ("text", "plain", ())


def test_missing_closing_delimiter_runs_last_part_to_end():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n"
    first, second = parse_structure(raw).children
    assert raw[first.body_start : first.body_end] == b"one"
    assert raw[second.body_start : second.body_end] == b"two\r\n"


def test_longer_boundary_is_not_a_delimiter():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--bb\r\nstill one\r\n--b--\r\n"
    (only,) = parse_structure(raw).children
    assert raw[only.body_start : only.body_end] == b"one\r\n--bb\r\nstill one"


def test_digest_children_default_to_message_rfc822():
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d--\r\n"
    )
    (child,) = parse_structure(raw).children
    assert (child.type, child.subtype) == ("message", "rfc822")
    assert child.envelope is not None and child.envelope[1] == "one"


def test_base64_message_rfc822_is_not_entered():
    part = parse_structure(
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA=="
    )
    assert part.message is None
    assert body_structure(part, extended=False) == ("MESSAGE", "RFC822", None, None, None, "BASE64", 16)


def test_lf_only_message_has_lf_offsets():
    raw = COMPOSITE.replace(b"\r\n", b"\n")
    root = parse_structure(raw)
    plain = root.children[0].children[0]
    assert raw[plain.body_start : plain.body_end] == b"Hello caf=C3=A9\nsecond line"
    assert body_structure(root, extended=False)[0][0][6:] == (27, 2)


def test_deep_nesting_is_capped_without_recursion_error():
    depth = 300
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    )
    raw += b"\r\nleaf"
    part = parse_structure(raw)
    levels = 0
    while part.children:
        part, levels = part.children[0], levels + 1
    assert levels == 50
    body_structure(parse_structure(raw), extended=True)


def test_deep_message_rfc822_nesting_is_capped():
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 200 + b"Subject: x\r\n\r\nbody"
    part = parse_structure(raw)
    levels = 0
    while part.message is not None:
        part, levels = part.message, levels + 1
    assert levels <= 50
    body_structure(parse_structure(raw), extended=True)


def test_part_count_is_capped():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 20_000 + b"--b--\r\n"
    root = parse_structure(raw)
    assert len(root.children) < 10_000


# --- properties ------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_structure(raw):
    part = parse_structure(raw)
    body_structure(part, extended=True)
    body_structure(part, extended=False)
    envelope(raw)
    assert 0 <= part.body_start <= part.body_end == len(raw)


_MIMEISH = st.lists(
    st.sampled_from(
        [
            b"Content-Type: multipart/mixed; boundary=q\r\n", b"Content-Type: message/rfc822\r\n",
            b"--q\r\n", b"--q--\r\n", b"\r\n", b"\n", b"To: a@b, (c) <d@e>; g:;\r\n", b"x\r\n",
            b"Content-Type: text/plain; name*0*=x'y'%; name*1=\"\\\r\n", b" folded\r\n", b"--q",
        ]
    ),
    max_size=40,
).map(b"".join)  # fmt: skip


@settings(max_examples=300)
@given(_MIMEISH)
def test_mime_like_bytes_give_consistent_ranges(raw):
    def check(part, start, end):
        assert start <= part.header_start <= part.body_start <= part.body_end <= end
        for child in part.children:
            check(child, part.body_start, part.body_end)
        if part.message is not None:
            check(part.message, part.body_start, part.body_end)

    root = parse_structure(raw)
    check(root, 0, len(raw))
    body_structure(root, extended=True)
