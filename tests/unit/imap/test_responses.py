"""Response models: validation and sanitisation on construction, and the client-side parser's tolerance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from whymail.imap.encoder import encode_response
from whymail.imap.response_parser import ResponseParseError, parse_response
from whymail.imap.responses import (
    Address,
    AppendUidCode,
    BadCharsetCode,
    Capability,
    Code,
    Continuation,
    CopyUidCode,
    Envelope,
    ESearch,
    Exists,
    Expunge,
    Fetch,
    FetchBodySection,
    FetchBodyStructure,
    FetchEnvelope,
    FetchFlags,
    FetchInternalDate,
    FetchModSeq,
    FetchRfc822,
    FetchUid,
    Flags,
    Id,
    ListResponse,
    Namespace,
    NamespaceEntry,
    NumberCode,
    PermanentFlagsCode,
    Search,
    StatusResponse,
    Tagged,
    Untagged,
    Vanished,
    clean_text,
    is_atom,
)

# --- models: tokens are validated --------------------------------------------------------------


@pytest.mark.parametrize("tag", ["", "A 1", "a+1", "a(", "a*", 'a"', "a\\b", "a{", "t\u00e9", "a\r\n"])
def test_invalid_tag_is_rejected(tag):
    with pytest.raises(ValueError):
        Tagged(tag, "OK", "x")


def test_tag_may_contain_close_bracket():
    assert Tagged("a]1", "OK", "x").tag == "a]1"


@pytest.mark.parametrize("flag", ["", "\\", "has space", "(x)", "\\Se]en", "\\*", "a%"])
def test_invalid_flag_is_rejected(flag):
    with pytest.raises(ValueError):
        Flags((flag,))


def test_wildcard_flag_only_in_permanentflags():
    assert PermanentFlagsCode(("\\*",)).flags == ("\\*",)
    with pytest.raises(ValueError):
        FetchFlags(("\\*",))


def test_list_attributes_must_be_backslash_atoms():
    with pytest.raises(ValueError):
        ListResponse(("Noselect",), "/", "x")


@pytest.mark.parametrize("delimiter", ["", "//", "\r", "\n", "\u00e9"])
def test_invalid_hierarchy_delimiter_is_rejected(delimiter):
    with pytest.raises(ValueError):
        ListResponse((), delimiter, "x")


@pytest.mark.parametrize("uids", ["", "0", "01", "1,", "1:", "a", "1 2", "1:*"])
def test_invalid_uid_set_is_rejected(uids):
    with pytest.raises(ValueError):
        Vanished(uids)


@pytest.mark.parametrize("number", [0, -1, 2**32, True])
def test_message_number_must_be_nz_number(number):
    with pytest.raises(ValueError):
        Expunge(number)


def test_mailbox_name_with_nul_or_lone_surrogate_is_rejected():
    with pytest.raises(ValueError):
        ListResponse((), "/", "a\x00b")
    with pytest.raises(ValueError):
        StatusResponse("\ud800", ())


def test_structured_codes_need_their_own_class():
    with pytest.raises(ValueError):
        Code("UIDNEXT", "5")
    with pytest.raises(ValueError):
        Code("ALERT", "bad]argument")
    with pytest.raises(ValueError):
        NumberCode("MESSAGES", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AppendUidCode(0, "1")


def test_section_syntax_is_checked_and_uppercased():
    assert FetchBodySection("1.2.mime", b"").section == "1.2.MIME"
    for bad in ("MIME", "0", "1..2", "1.TEXT.1", "BODY", "1.HEADER]"):
        with pytest.raises(ValueError):
            FetchBodySection(bad, b"")
    with pytest.raises(ValueError):
        FetchBodySection("HEADER.FIELDS", b"")  # needs field names
    with pytest.raises(ValueError):
        FetchBodySection("TEXT", b"", None, ("From",))


def test_internaldate_needs_aware_datetime():
    with pytest.raises(ValueError):
        FetchInternalDate(datetime(2020, 1, 1))


def test_fetch_needs_items():
    with pytest.raises(ValueError):
        Fetch(1, ())


# --- models: text and data are sanitised so that the wire form stays legal -----------------------


def test_clean_text_replaces_line_breaks_nul_and_8bit():
    assert clean_text("a\r\nb\x00c\u00e9") == "a  b c?"
    assert clean_text("tab\tok") == "tab\tok"


def test_empty_text_gets_a_status_specific_default():
    assert Tagged("a", "OK").text == "completed"
    assert Tagged("a", "NO", "").text == "failed"
    assert Untagged("BYE").text == "logging out"
    assert Continuation().text == ""


def test_text_starting_with_bracket_is_shifted_when_there_is_no_code():
    assert Untagged("OK", "[x] y").text == " [x] y"
    assert Untagged("OK", "[x] y", Code("ALERT")).text == "[x] y"


def test_code_names_and_status_items_are_uppercased():
    assert Code("alert") == Code("ALERT")
    assert StatusResponse("x", (("messages", 1),)).items == (("MESSAGES", 1),)


def test_search_modseq_dropped_when_there_are_no_results():
    assert Search((), 5).modseq is None  # RFC 7162 §3.1.5: no MODSEQ on an empty result


def test_empty_lists_normalise_to_nil():
    assert Namespace((), None, ()).personal is None
    assert Id(()).params is None
    assert Envelope(to=()).to is None
    assert BadCharsetCode(["UTF-8"]).charsets == ("UTF-8",)


def test_nested_values_accept_bytes_and_lists():
    body = FetchBodyStructure(["text", b"pl\xffain", [b"charset", "utf-8"], None, 5])
    assert body.structure == ("text", "pl\udcffain", ("charset", "utf-8"), None, 5)
    wire = encode_response(Fetch(1, (body,)))
    assert b'{6}\r\npl\xffain' in wire
    assert parse_response(wire) == Fetch(1, (body,))


def test_nested_value_rejects_unknown_types_and_nul_is_replaced():
    with pytest.raises(ValueError):
        FetchBodyStructure(("text", 1.5))
    assert FetchBodyStructure(("a\x00b",)).structure == ("a\ufffdb",)


def test_8bit_header_bytes_survive_the_round_trip():
    env = Envelope(subject=b"Gr\xfc\xdfe")
    assert env.subject == "Gr\udcfc\udcdfe"
    assert parse_response(encode_response(Fetch(1, (FetchEnvelope(env),)))).items[0].envelope == env


def test_internaldate_drops_microseconds_and_subminute_offsets():
    date = FetchInternalDate(datetime(2020, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(seconds=3630)))).date
    assert date.microsecond == 0
    assert date.utcoffset() == timedelta(minutes=60)


def test_models_are_frozen_and_slotted():
    resp = Exists(1)
    with pytest.raises(AttributeError):
        resp.count = 2  # type: ignore[misc]
    assert not hasattr(resp, "__dict__")


def test_is_atom():
    assert is_atom("IMAP4rev1") and is_atom("AUTH=PLAIN")
    assert not is_atom("a]b") and is_atom("a]b", allow_bracket=True)
    assert not is_atom("") and not is_atom("a b") and not is_atom("\u00e9")


# --- parser: what other servers send ------------------------------------------------------------


def test_parser_accepts_lowercase_keywords_and_missing_text():
    assert parse_response(b"a1 ok [read-write] done\r\n") == Tagged("a1", "OK", "done", Code("READ-WRITE"))
    assert parse_response(b"a1 OK\r\n") == Tagged("a1", "OK")
    assert parse_response(b"+\r\n") == Continuation("")
    assert parse_response(b"* 3 exists\r\n") == Exists(3)


def test_parser_keeps_unknown_codes_with_their_argument():
    assert parse_response(b"* NO [X-FOO bar baz] no\r\n") == Untagged("NO", "no", Code("X-FOO", "bar baz"))


def test_parser_accepts_quoted_body_data_and_nonsync_literals():
    assert parse_response(b'* 1 FETCH (BODY[TEXT] "hi" UID 9)\r\n') == \
        Fetch(1, (FetchBodySection("TEXT", b"hi"), FetchUid(9)))
    assert parse_response(b"* 1 FETCH (RFC822 {2+}\r\nhi)\r\n") == Fetch(1, (FetchRfc822("RFC822", b"hi"),))


def test_parser_accepts_space_between_juxtaposed_parts():
    wire = b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7bit" 1 1) ("text" "html" NIL NIL NIL "7bit" 2 1) "alternative"))\r\n'
    parsed = parse_response(wire)
    assert parsed.items[0].structure[2] == "alternative"


def test_parser_reads_mailbox_as_literal():
    assert parse_response(b'* LIST () "/" {5}\r\na\r\nbc\r\n') == ListResponse((), "/", "a\r\nbc")


def test_parser_reads_modseq_and_dates():
    resp = parse_response(b'* 4 FETCH (MODSEQ (12) INTERNALDATE " 1-Feb-2021 10:00:00 +0000")\r\n')
    assert resp == Fetch(4, (FetchModSeq(12), FetchInternalDate(datetime(2021, 2, 1, 10, tzinfo=UTC))))


@pytest.mark.parametrize("wire", [
    b"",
    b"* 1 EXISTS",  # no CRLF
    b"* 1 EXISTS\r\n* 2 EXISTS\r\n",  # two responses
    b"* 1 FETCH (BODY[] {10}\r\nabc)\r\n",  # truncated literal
    b"* 1 FETCH (FOO 1)\r\n",
    b"* FROB\r\n",
    b"* 0 FETCH (UID 1)\r\n",  # message numbers start at 1
    b"a1 MAYBE done\r\n",
    b'* 1 FETCH (INTERNALDATE "yesterday")\r\n',
    b'* LIST (\\Noselect) "/" "unterminated\r\n',
])
def test_parser_rejects_malformed_input(wire):
    with pytest.raises(ResponseParseError):
        parse_response(wire)


def test_everything_round_trips_for_a_typical_select():
    session = [
        Flags(("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")),
        Untagged("OK", "Limited", PermanentFlagsCode(("\\Deleted", "\\Seen", "\\*"))),
        Exists(172),
        Untagged("OK", "UIDs valid", NumberCode("UIDVALIDITY", 3857529045)),
        Untagged("OK", "Predicted next UID", NumberCode("UIDNEXT", 4392)),
        Tagged("A142", "OK", "SELECT completed", Code("READ-WRITE")),
        Capability(("IMAP4rev1", "UIDPLUS")),
        ESearch("x", True, 1, 9, "1:9", 9, 17),
        Fetch(1, (FetchEnvelope(Envelope(from_=[Address("A", None, "a", "b")])),)),
        Namespace((NamespaceEntry("", "/"),)),
        Tagged("A1", "OK", "copied", CopyUidCode(7, "1:3", "10:12")),
    ]
    for resp in session:
        assert parse_response(encode_response(resp)) == resp


def test_envelope_only_at_index_7_of_message_rfc822_part():
    text = ("text", "plain", None, None, None, "7bit", 1, 1)
    with pytest.raises(ValueError):
        FetchBodyStructure(("text", "plain", Envelope()))
    with pytest.raises(ValueError):
        FetchBodyStructure(("message", "rfc822", None, None, None, "7bit", 1, ("not", "an envelope"), text, 1))
    ok = FetchBodyStructure((("message", "rfc822", None, None, None, "7bit", 1, Envelope(), text, 1), "mixed"))
    assert isinstance(ok.structure[0][7], Envelope)


def test_wrong_item_types_are_rejected_before_encoding():
    with pytest.raises(ValueError):
        Fetch(1, (FetchUid(1), "FLAGS ()"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Tagged("a", "OK", "x", "ALERT")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Envelope(to=("someone@example.org",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FetchEnvelope(None)  # type: ignore[arg-type]
