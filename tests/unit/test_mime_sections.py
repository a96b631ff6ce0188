"""FETCH BODY[section]<partial> (RFC 3501 §6.4.5)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_mime_structure import COMPOSITE, INNER, PDF_B64
from whymail.mime.sections import SectionSpec, fetch_section, parse_section_spec, rfc822_size
from whymail.mime.structure import parse_structure

# --- section-spec parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("", SectionSpec()),
        ("HEADER", SectionSpec((), "HEADER")),
        ("text", SectionSpec((), "TEXT")),
        ("1", SectionSpec((1,))),
        ("1.2.3", SectionSpec((1, 2, 3))),
        ("1.2.MIME", SectionSpec((1, 2), "MIME")),
        ("2.HEADER", SectionSpec((2,), "HEADER")),
        ("HEADER.FIELDS (From To)", SectionSpec((), "HEADER.FIELDS", ("FROM", "TO"))),
        (
            '1.2.header.fields.not ("Subject" x-y)',
            SectionSpec((1, 2), "HEADER.FIELDS.NOT", ("SUBJECT", "X-Y")),
        ),
    ],
)
def test_parse_section_spec(text, spec):
    assert parse_section_spec(text) == spec


@pytest.mark.parametrize(
    "text", ["MIME", "0", "1.0", "BOGUS", "1.FOO", "HEADER.FIELDS", "HEADER.FIELDS ()", "TEXT (A)", "1 2"]
)
def test_parse_section_spec_rejects_invalid(text):
    with pytest.raises(ValueError):
        parse_section_spec(text)


# --- the composite message -------------------------------------------------------------------------

TOP_HEADER = COMPOSITE[: COMPOSITE.index(b"\r\n\r\n") + 4]
INNER_HEADER = INNER[: INNER.index(b"\r\n\r\n") + 4]
ALTERNATIVE_BODY = (
    b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nHello caf=C3=A9\r\nsecond line\r\n--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>Hello</p>\r\n--inner--\r\n"
)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("", COMPOSITE),
        ("HEADER", TOP_HEADER),
        ("TEXT", COMPOSITE[len(TOP_HEADER) :]),
        ("1", ALTERNATIVE_BODY),
        ("1.MIME", b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"),
        ("1.1", b"Hello caf=C3=A9\r\nsecond line"),
        (
            "1.1.MIME",
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
        ),
        ("1.2", b"<p>Hello</p>"),
        ("1.2.MIME", b"Content-Type: text/html; charset=utf-8\r\n\r\n"),
        ("2", PDF_B64[:-2]),
        ("3", INNER[:-2]),
        ("3.HEADER", INNER_HEADER),
        ("3.TEXT", b"inner body line 1\r\ninner body line 2"),
        ("3.1", b"inner body line 1\r\ninner body line 2"),
        ("3.1.MIME", INNER_HEADER),
        ("3.HEADER.FIELDS (subject)", b"Subject: inner subject\r\n\r\n"),
        ("HEADER.FIELDS (FROM date)", TOP_HEADER.split(b"To:")[0] + b"\r\n"),
    ],
)
def test_composite_sections(section, expected):
    assert fetch_section(COMPOSITE, section) == expected


@pytest.mark.parametrize("section", ["4", "1.3", "2.1", "1.1.1", "2.HEADER", "1.TEXT", "5.MIME", "3.2"])
def test_missing_section_is_empty(section):
    assert fetch_section(COMPOSITE, section) == b""


def test_header_fields_keeps_folding_and_ends_with_blank_line():
    raw = b"From: a@x.test\r\nTo: b@x.test,\r\n\tc@x.test\r\nSubject: s\r\nto: d@x.test\r\n\r\nbody\r\n"
    assert fetch_section(raw, "HEADER.FIELDS (TO)") == b"To: b@x.test,\r\n\tc@x.test\r\nto: d@x.test\r\n\r\n"
    assert fetch_section(raw, "HEADER.FIELDS.NOT (to From)") == b"Subject: s\r\n\r\n"
    assert fetch_section(raw, "HEADER.FIELDS (X-None)") == b"\r\n"


def test_header_fields_of_lf_message_use_lf():
    raw = b"From: a@x.test\nSubject: s\n\nbody\n"
    assert fetch_section(raw, "HEADER.FIELDS (subject)") == b"Subject: s\n\n"
    assert fetch_section(raw, "HEADER") == b"From: a@x.test\nSubject: s\n\n"
    assert fetch_section(raw, "TEXT") == b"body\n"


def test_header_without_final_line_break_still_ends_each_field():
    assert fetch_section(b"Subject: s", "HEADER.FIELDS (SUBJECT)") == b"Subject: s\r\n\r\n"
    assert fetch_section(b"Subject: s", "TEXT") == b""


def test_part_one_of_a_single_part_message_is_its_body():
    raw = b"Subject: s\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    assert fetch_section(raw, "1") == fetch_section(raw, "TEXT") == b"hello\r\n"
    assert fetch_section(raw, "1.MIME") == fetch_section(raw, "HEADER")
    assert fetch_section(raw, "2") == b""


def test_rfc3501_section_example_tree():
    # The message of RFC 3501 §6.4.5's part-number example.
    def multipart(boundary: bytes, *parts: bytes, subtype: bytes = b"mixed") -> bytes:
        inner = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
        return (
            b"Content-Type: multipart/"
            + subtype
            + b"; boundary="
            + boundary
            + b"\r\n\r\n"
            + inner
            + b"--"
            + boundary
            + b"--"
        )

    def leaf(ctype: bytes, body: bytes) -> bytes:
        return b"Content-Type: " + ctype + b"\r\n\r\n" + body

    alt = multipart(
        b"a4", leaf(b"text/plain", b"4.2.2.1"), leaf(b"text/richtext", b"4.2.2.2"), subtype=b"alternative"
    )
    msg42 = b"Subject: 4.2\r\n" + multipart(b"m42", leaf(b"text/plain", b"4.2.1"), alt)
    msg3 = b"Subject: 3\r\n" + multipart(
        b"m3", leaf(b"text/plain", b"3.1"), leaf(b"application/octet-stream", b"3.2")
    )
    part4 = multipart(b"m4", leaf(b"image/gif", b"4.1"), leaf(b"message/rfc822", msg42))
    raw = b"Subject: top\r\n" + multipart(
        b"top",
        leaf(b"text/plain", b"1"),
        leaf(b"application/octet-stream", b"2"),
        leaf(b"message/rfc822", msg3),
        part4,
    )
    root = parse_structure(raw)
    for section in ["1", "2", "3.1", "3.2", "4.1", "4.2.1", "4.2.2.1", "4.2.2.2"]:
        assert fetch_section(raw, section, structure=root) == section.encode()
    assert fetch_section(raw, "3", structure=root) == msg3
    assert fetch_section(raw, "3.HEADER", structure=root).startswith(
        b"Subject: 3\r\nContent-Type: multipart/mixed"
    )
    assert fetch_section(raw, "3.TEXT", structure=root).startswith(b"--m3\r\n")
    assert fetch_section(raw, "4.1.MIME", structure=root) == b"Content-Type: image/gif\r\n\r\n"
    assert fetch_section(raw, "4.2.HEADER", structure=root).startswith(b"Subject: 4.2\r\n")
    assert fetch_section(raw, "4.2.TEXT", structure=root).endswith(b"--m42--")
    assert fetch_section(raw, "4.2.2.MIME", structure=root).startswith(b"Content-Type: multipart/alternative")


# --- partial fetches -------------------------------------------------------------------------------


def test_partial_examples():
    assert fetch_section(COMPOSITE, "", (0, 4)) == b"Date"
    assert fetch_section(COMPOSITE, "3.TEXT", (6, 4)) == b"body"
    assert fetch_section(COMPOSITE, "TEXT", (len(COMPOSITE), 10)) == b""
    assert fetch_section(COMPOSITE, "1.1", (0, 0)) == b""
    with pytest.raises(ValueError):
        fetch_section(COMPOSITE, "", (-1, 3))


_SECTIONS = ["", "HEADER", "TEXT", "1", "1.1", "1.MIME", "2", "3", "3.HEADER", "3.TEXT", "HEADER.FIELDS (to)"]


@given(st.sampled_from(_SECTIONS), st.integers(0, 2000), st.integers(0, 2000))
def test_partial_is_a_slice_of_the_full_section(section, origin, count):
    full = fetch_section(COMPOSITE, section)
    assert fetch_section(COMPOSITE, section, (origin, count)) == full[origin : origin + count]


@settings(max_examples=200)
@given(st.binary(max_size=500), st.sampled_from(_SECTIONS + ["1.2.3.MIME", "2.1.HEADER"]))
def test_any_bytes_any_section_never_raise(raw, section):
    assert isinstance(fetch_section(raw, section, (1, 50)), bytes)


def test_rfc822_size_is_stored_length():
    assert rfc822_size(COMPOSITE) == len(COMPOSITE)


# --- generated messages: each section is exactly the bytes that were written ------------------------

_leaf = st.lists(st.text(alphabet="abc xyz-", max_size=12), max_size=3).map(lambda lines: ("leaf", lines))
_tree = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=3).map(lambda children: ("multi", children)),
        kids.map(lambda child: ("message", child)),
    ),
    max_leaves=10,
)


def _render(node, nl: bytes, boundaries) -> tuple[bytes, bytes, list, tuple | None]:
    """(MIME header, body, rendered children, rendered encapsulated message as (header, body, root))."""
    kind, content = node
    if kind == "leaf":
        return b"Content-Type: text/plain" + nl + nl, nl.join(s.encode() for s in content), [], None
    if kind == "multi":
        boundary = b"=_b%d" % next(boundaries)
        children = [_render(child, nl, boundaries) for child in content]
        delimiter = b"--" + boundary
        body = (
            delimiter
            + nl
            + (nl + delimiter + nl).join(c[0] + c[1] for c in children)
            + nl
            + delimiter
            + b"--"
        )
        return b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + nl + nl, body, children, None
    root = _render(content, nl, boundaries)
    inner_header = b"Subject: inner" + nl + root[0]
    return (
        b"Content-Type: message/rfc822" + nl + nl,
        inner_header + root[1],
        [],
        (inner_header, root[1], root),
    )


def _expected(message_header: bytes, message_body: bytes, root, prefix: str, out: dict) -> None:
    """Sections inside a message whose root part is `root`, per RFC 3501 §6.4.5."""
    if root[2]:  # multipart root: its children are parts 1..n
        for index, child in enumerate(root[2], 1):
            _expected_part(child[0], child[1], child, f"{prefix}{index}", out)
    else:
        _expected_part(message_header, message_body, root, f"{prefix}1", out)


def _expected_part(header: bytes, body: bytes, rendered, path: str, out: dict) -> None:
    out[path] = body
    out[path + ".MIME"] = header
    if rendered[2]:
        for index, child in enumerate(rendered[2], 1):
            _expected_part(child[0], child[1], child, f"{path}.{index}", out)
    if rendered[3] is not None:
        inner_header, inner_body, inner_root = rendered[3]
        out[path + ".HEADER"] = inner_header
        out[path + ".TEXT"] = inner_body
        _expected(inner_header, inner_body, inner_root, f"{path}.", out)


@settings(max_examples=150)
@given(_tree, st.sampled_from([b"\r\n", b"\n"]))
def test_generated_messages_sections_match_what_was_written(tree, nl):
    root = _render(tree, nl, itertools.count())
    header = b"Subject: top" + nl + root[0]
    raw = header + root[1]
    expected = {"": raw, "HEADER": header, "TEXT": root[1]}
    _expected(header, root[1], root, "", expected)
    structure = parse_structure(raw)
    for section, data in expected.items():
        assert fetch_section(raw, section, structure=structure) == data, section
