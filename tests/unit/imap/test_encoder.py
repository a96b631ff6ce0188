"""Encoder: exact bytes for RFC 3501 §7/§8 examples and the extensions, plus Hypothesis round trips."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.imap.encoder import (
    encode_astring,
    encode_response,
    encode_responses,
    encode_string,
    format_date,
)
from whymail.imap.response_parser import parse_response
from whymail.imap.responses import (
    SIMPLE_CODES,
    Address,
    AppendUidCode,
    BadCharsetCode,
    Capability,
    CapabilityCode,
    Code,
    Continuation,
    CopyUidCode,
    Enabled,
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
    FetchSize,
    FetchUid,
    Flags,
    Id,
    ListResponse,
    ModifiedCode,
    Namespace,
    NamespaceEntry,
    NumberCode,
    PermanentFlagsCode,
    Recent,
    Search,
    StatusResponse,
    Tagged,
    Untagged,
    Vanished,
)

STRUCTURED = {"BADCHARSET", "CAPABILITY", "PERMANENTFLAGS", "MODIFIED", "APPENDUID", "COPYUID",
              "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"}

# --- Hypothesis strategies: every response kind, with hostile text and bytes where the model allows ---

ATOM_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '(){%*"\\]')
atoms = st.text(ATOM_CHARS, min_size=1, max_size=12)
tags = st.text(ATOM_CHARS.replace("+", "") + "]", min_size=1, max_size=8)
flags = st.one_of(atoms, atoms.map(lambda a: "\\" + a))
nz = st.integers(1, 2**32 - 1)
modseqs = st.integers(1, 2**63 - 1)
mailboxes = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
nstrings = st.none() | st.text(max_size=20)
delimiters = st.none() | st.characters(min_codepoint=1, max_codepoint=0x7F, exclude_characters="\r\n")
seq_sets = st.lists(st.tuples(nz, st.none() | nz), min_size=1, max_size=5).map(
    lambda ranges: ",".join(str(a) if b is None else f"{a}:{b}" for a, b in ranges))
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
dates = st.builds(lambda d, tz: d.replace(tzinfo=tz), st.datetimes(), offsets)

codes = st.one_of(
    st.sampled_from(sorted(SIMPLE_CODES)).map(Code),
    st.builds(Code, atoms.filter(lambda a: a.upper() not in STRUCTURED),
              st.none() | st.text(st.characters(min_codepoint=1, max_codepoint=0x7F,
                                                exclude_characters="\r\n]"), min_size=1)),
    st.builds(BadCharsetCode, st.lists(mailboxes, max_size=3).map(tuple)),
    st.builds(CapabilityCode, st.lists(atoms, max_size=4).map(tuple)),
    st.builds(PermanentFlagsCode, st.lists(flags | st.just("\\*"), max_size=4).map(tuple)),
    st.builds(NumberCode, st.sampled_from(["UIDNEXT", "UIDVALIDITY", "UNSEEN"]), st.integers(0, 2**32 - 1)),
    st.builds(NumberCode, st.just("HIGHESTMODSEQ"), modseqs),
    st.builds(ModifiedCode, seq_sets),
    st.builds(AppendUidCode, nz, seq_sets),
    st.builds(CopyUidCode, nz, seq_sets, seq_sets),
)

addresses = st.builds(Address, nstrings, nstrings, nstrings, nstrings)
address_lists = st.none() | st.lists(addresses, max_size=3).map(tuple)
envelopes = st.builds(Envelope, nstrings, nstrings, address_lists, address_lists, address_lists,
                      address_lists, address_lists, address_lists, nstrings, nstrings)
values = st.recursive(st.none() | st.integers(0, 2**40) | st.text(max_size=10),
                      lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=20)
part = st.tuples(st.sampled_from(["text", "image"]), st.text(max_size=5), values, values, st.integers(0, 9999))


def _bodies(depth: int):
    if depth == 0:
        return part
    child = _bodies(depth - 1)
    multipart = st.builds(lambda kids, sub, ext: (*kids, sub, *ext), st.lists(child, min_size=1, max_size=3),
                          st.text(max_size=6), st.lists(values, max_size=3))
    message = st.builds(lambda env, body, ext: ("message", "RFC822", None, None, None, "7bit", 10, env, body, 2, *ext),
                        envelopes, child, st.lists(values, max_size=2))
    return child | multipart | message


sections = st.one_of(
    st.builds(lambda s, d, o: FetchBodySection(s, d, o), st.sampled_from(["", "TEXT", "HEADER", "1", "1.2.MIME",
                                                                           "2.HEADER", "3.1.TEXT"]),
              st.none() | st.binary(max_size=40), st.none() | st.integers(0, 2**32 - 1)),
    st.builds(lambda s, f, d: FetchBodySection(s, d, None, tuple(f)),
              st.sampled_from(["HEADER.FIELDS", "HEADER.FIELDS.NOT", "1.HEADER.FIELDS"]),
              st.lists(mailboxes, min_size=1, max_size=3), st.none() | st.binary(max_size=40)),
)
fetch_items = st.one_of(
    st.builds(FetchFlags, st.lists(flags, max_size=4).map(tuple)),
    st.builds(FetchUid, nz),
    st.builds(FetchModSeq, modseqs),
    st.builds(FetchInternalDate, dates),
    st.builds(FetchSize, st.integers(0, 2**32 - 1)),
    st.builds(FetchEnvelope, envelopes),
    st.builds(FetchBodyStructure, values.filter(lambda v: isinstance(v, tuple) and v), st.booleans()),
    st.builds(FetchBodyStructure, _bodies(2), st.booleans()),
    sections,
    st.builds(FetchRfc822, st.sampled_from(["RFC822", "RFC822.HEADER", "RFC822.TEXT"]), st.none() | st.binary()),
)
namespaces = st.none() | st.lists(st.builds(NamespaceEntry, mailboxes, delimiters), max_size=3).map(tuple)


def responses():
    text = st.text()
    return st.one_of(
        st.builds(Tagged, tags, st.sampled_from(["OK", "NO", "BAD"]), text, st.none() | codes),
        st.builds(Untagged, st.sampled_from(["OK", "NO", "BAD", "BYE", "PREAUTH"]), text, st.none() | codes),
        st.builds(Continuation, text),
        st.builds(Capability, st.lists(atoms, max_size=5).map(tuple)),
        st.builds(Enabled, st.lists(atoms, max_size=3).map(tuple)),
        st.builds(ListResponse, st.lists(atoms.map(lambda a: "\\" + a), max_size=3).map(tuple), delimiters,
                  mailboxes, st.sampled_from(["LIST", "LSUB"])),
        st.builds(StatusResponse, mailboxes, st.lists(st.tuples(
            st.sampled_from(["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"]),
            st.integers(0, 2**63 - 1)), max_size=6).map(tuple)),
        st.builds(Search, st.lists(nz, max_size=8).map(tuple), st.none() | modseqs),
        st.builds(ESearch, st.none() | tags, st.booleans(), st.none() | nz, st.none() | nz, st.none() | seq_sets,
                  st.none() | st.integers(0, 2**32 - 1), st.none() | modseqs),
        st.builds(Flags, st.lists(flags, max_size=5).map(tuple)),
        st.builds(Exists, st.integers(0, 2**32 - 1)),
        st.builds(Recent, st.integers(0, 2**32 - 1)),
        st.builds(Expunge, nz),
        st.builds(Vanished, seq_sets, st.booleans()),
        st.builds(Namespace, namespaces, namespaces, namespaces),
        st.builds(Id, st.none() | st.lists(st.tuples(mailboxes, st.none() | mailboxes), max_size=4).map(tuple)),
        st.builds(Fetch, nz, st.lists(fetch_items, min_size=1, max_size=4).map(tuple)),
    )


PDT = timezone(timedelta(hours=-7))

RFC_EXAMPLES = [
    # RFC 3501 §7.1
    (Untagged("OK", "IMAP4rev1 server ready"), b"* OK IMAP4rev1 server ready\r\n"),
    (Untagged("OK", "UIDs valid", NumberCode("UIDVALIDITY", 3857529045)),
     b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"),
    (Untagged("OK", "Predicted next UID", NumberCode("UIDNEXT", 4392)),
     b"* OK [UIDNEXT 4392] Predicted next UID\r\n"),
    (Untagged("OK", "Message 12 is first unseen", NumberCode("UNSEEN", 12)),
     b"* OK [UNSEEN 12] Message 12 is first unseen\r\n"),
    (Untagged("OK", "Limited", PermanentFlagsCode(("\\Deleted", "\\Seen", "\\*"))),
     b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
    (Tagged("A001", "OK", "SELECT completed", Code("READ-WRITE")), b"A001 OK [READ-WRITE] SELECT completed\r\n"),
    (Tagged("A142", "OK", "EXAMINE completed", Code("READ-ONLY")), b"A142 OK [READ-ONLY] EXAMINE completed\r\n"),
    (Tagged("A003", "NO", "COPY failed: no such mailbox", Code("TRYCREATE")),
     b"A003 NO [TRYCREATE] COPY failed: no such mailbox\r\n"),
    (Untagged("NO", "Disk is 98% full, please delete unnecessary data"),
     b"* NO Disk is 98% full, please delete unnecessary data\r\n"),
    (Untagged("BAD", "Command line too long"), b"* BAD Command line too long\r\n"),
    (Untagged("PREAUTH", "IMAP4rev1 server logged in as Smith"),
     b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n"),
    (Untagged("BYE", "Autologout; idle for too long"), b"* BYE Autologout; idle for too long\r\n"),
    (Untagged("OK", "Fire in the building", Code("ALERT")), b"* OK [ALERT] Fire in the building\r\n"),
    (Tagged("a", "NO", "Nope", BadCharsetCode()), b"a NO [BADCHARSET] Nope\r\n"),
    (Tagged("a", "NO", "Nope", BadCharsetCode(("UTF-8", "US-ASCII"))), b"a NO [BADCHARSET (UTF-8 US-ASCII)] Nope\r\n"),
    (Untagged("OK", "ready", CapabilityCode(("IMAP4rev1", "AUTH=PLAIN"))),
     b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"),
    # RFC 3501 §7.2
    (Capability(("IMAP4rev1", "STARTTLS", "AUTH=GSSAPI", "LOGINDISABLED")),
     b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n"),
    (ListResponse(("\\Noselect",), "/", "~/Mail/foo"), b'* LIST (\\Noselect) "/" ~/Mail/foo\r\n'),
    (ListResponse(("\\HasNoChildren",), "/", "INBOX"), b'* LIST (\\HasNoChildren) "/" INBOX\r\n'),
    (ListResponse((), None, ""), b'* LIST () NIL ""\r\n'),
    (ListResponse(("\\Noselect",), ".", "#news.comp.mail.misc", "LSUB"),
     b'* LSUB (\\Noselect) "." #news.comp.mail.misc\r\n'),
    (StatusResponse("blurdybloop", (("MESSAGES", 231), ("UIDNEXT", 44292))),
     b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"),
    (Search((2, 3, 6)), b"* SEARCH 2 3 6\r\n"),
    (Search(()), b"* SEARCH\r\n"),
    (Flags(("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")),
     b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"),
    # RFC 3501 §7.3-7.4
    (Exists(23), b"* 23 EXISTS\r\n"),
    (Recent(5), b"* 5 RECENT\r\n"),
    (Expunge(8), b"* 8 EXPUNGE\r\n"),
    (Fetch(12, (FetchFlags(("\\Seen",)), FetchUid(4827313))), b"* 12 FETCH (FLAGS (\\Seen) UID 4827313)\r\n"),
    (Fetch(23, (FetchFlags(("\\Seen",)), FetchSize(44827))),
     b"* 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827)\r\n"),
    (Fetch(12, (FetchInternalDate(datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)),)),
     b'* 12 FETCH (INTERNALDATE "17-Jul-1996 02:44:25 -0700")\r\n'),
    (Fetch(12, (FetchBodySection("", b"Hi!\r\n"),)), b"* 12 FETCH (BODY[] {5}\r\nHi!\r\n)\r\n"),
    (Fetch(1, (FetchBodySection("1.2.TEXT", b"abc", 100),)), b"* 1 FETCH (BODY[1.2.TEXT]<100> {3}\r\nabc)\r\n"),
    (Fetch(1, (FetchBodySection("HEADER.FIELDS.NOT", None, None, ("Subject", "From")),)),
     b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (Subject From)] NIL)\r\n"),
    (Fetch(2, (FetchRfc822("RFC822.HEADER", b"X: y\r\n\r\n"),)),
     b"* 2 FETCH (RFC822.HEADER {8}\r\nX: y\r\n\r\n)\r\n"),
    # RFC 3501 §7.5
    (Continuation("Ready for additional command text"), b"+ Ready for additional command text\r\n"),
    (Continuation(""), b"+ \r\n"),
    # RFC 4315 UIDPLUS
    (Tagged("A003", "OK", "APPEND completed", AppendUidCode(38505, "3955")),
     b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
    (Tagged("A004", "OK", "Done", CopyUidCode(38505, "304,319:320", "3956:3958")),
     b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"),
    # RFC 7162 CONDSTORE/QRESYNC
    (Untagged("OK", "Highest", NumberCode("HIGHESTMODSEQ", 715194045007)),
     b"* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"),
    (Untagged("OK", "Sorry, this mailbox format doesn't support modsequences", Code("NOMODSEQ")),
     b"* OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences\r\n"),
    (Tagged("d105", "OK", "Conditional STORE failed", ModifiedCode("7,9")),
     b"d105 OK [MODIFIED 7,9] Conditional STORE failed\r\n"),
    (Fetch(7, (FetchUid(25996), FetchModSeq(12121231000))), b"* 7 FETCH (UID 25996 MODSEQ (12121231000))\r\n"),
    (Search((2, 5, 6, 7, 11, 12, 18, 19, 20, 23), 917162500),
     b"* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)\r\n"),
    (Vanished("41,43:116,118,120:211,214:540", earlier=True),
     b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n"),
    (Vanished("405,407,410,425"), b"* VANISHED 405,407,410,425\r\n"),
    (StatusResponse("blurdybloop", (("MESSAGES", 231), ("UIDNEXT", 7), ("HIGHESTMODSEQ", 7011231777))),
     b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 7 HIGHESTMODSEQ 7011231777)\r\n"),
    (Untagged("OK", "Previously selected mailbox is now closed", Code("CLOSED")),
     b"* OK [CLOSED] Previously selected mailbox is now closed\r\n"),
    # RFC 4731 ESEARCH
    (ESearch("A282", min=2, count=3), b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'),
    (ESearch("A283", uid=True, all="2,10:11"), b'* ESEARCH (TAG "A283") UID ALL 2,10:11\r\n'),
    (ESearch(), b"* ESEARCH\r\n"),
    # RFC 5530
    (Tagged("a", "NO", "Authentication failed", Code("AUTHENTICATIONFAILED")),
     b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"),
    (Tagged("a", "NO", "Over quota", Code("OVERQUOTA")), b"a NO [OVERQUOTA] Over quota\r\n"),
    # RFC 2342, RFC 2971, RFC 5161
    (Namespace((NamespaceEntry("", "/"),), None, (NamespaceEntry("#shared/", "/"),)),
     b'* NAMESPACE (("" "/")) NIL (("#shared/" "/"))\r\n'),
    (Namespace((NamespaceEntry("", "/"),), (NamespaceEntry("~", "/"), NamespaceEntry("#users/", "/")), None),
     b'* NAMESPACE (("" "/")) (("~" "/")("#users/" "/")) NIL\r\n'),
    (Id((("name", "Cyrus"), ("version", "1.5"), ("support-url", None))),
     b'* ID ("name" "Cyrus" "version" "1.5" "support-url" NIL)\r\n'),
    (Id(None), b"* ID NIL\r\n"),
    (Enabled(("CONDSTORE", "QRESYNC")), b"* ENABLED CONDSTORE QRESYNC\r\n"),
    (Enabled(()), b"* ENABLED\r\n"),
]


@pytest.mark.parametrize(("response", "wire"), RFC_EXAMPLES, ids=[w[:40].decode("latin-1") for _, w in RFC_EXAMPLES])
def test_rfc_example_encodes_to_exact_bytes_and_parses_back(response, wire):
    assert encode_response(response) == wire
    assert parse_response(wire) == response


def test_envelope_and_bodystructure_match_rfc3501_section_7_4_2_shape():
    env = Envelope(
        "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)", "IMAP4rev1 WG mtg summary and minutes",
        from_=(Address("Terry Gray", None, "gray", "cac.washington.edu"),),
        to=(Address(None, None, "imap", "cac.washington.edu"),),
        cc=(Address(None, None, "minutes", "CNRI.Reston.VA.US"), Address("John Klensin", None, "KLENSIN", "MIT.EDU")),
        message_id="<B27397-0100000@cac.washington.edu>",
    )
    body = ("TEXT", "PLAIN", ("CHARSET", "US-ASCII"), None, None, "7BIT", 3028, 92)
    wire = encode_response(Fetch(12, (FetchEnvelope(env), FetchBodyStructure(body, extensible=False))))
    assert wire == (
        b'* 12 FETCH (ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) NIL NIL '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        b'"<B27397-0100000@cac.washington.edu>") '
        b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n'
    )
    assert parse_response(wire) == Fetch(12, (FetchEnvelope(env), FetchBodyStructure(body, extensible=False)))


def test_multipart_children_are_juxtaposed_and_rfc822_part_carries_envelope():
    inner_env = Envelope(subject="inner", from_=(Address(None, None, "a", "example.org"),))
    text = ("text", "plain", ("charset", "utf-8"), None, None, "7bit", 5, 1, None, None, None, None)
    rfc822 = ("message", "rfc822", None, None, None, "7bit", 300, inner_env, text, 12, None, None, None, None)
    structure = (text, rfc822, "mixed", ("boundary", "xyz"), None, None, None)
    wire = encode_response(Fetch(3, (FetchBodyStructure(structure),)))
    assert b'NIL NIL NIL)("message" "rfc822"' in wire  # no SP between sibling parts (body-type-mpart)
    assert b'(("a" NIL' not in wire and b"((NIL NIL \"a\" \"example.org\"))" in wire
    assert parse_response(wire) == Fetch(3, (FetchBodyStructure(structure),))


def test_internaldate_pads_single_digit_day_with_space_and_keeps_offset():
    when = datetime(2002, 7, 1, 9, 5, 3, 999, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert format_date(when) == " 1-Jul-2002 09:05:03 +0530"
    parsed = parse_response(encode_response(Fetch(1, (FetchInternalDate(when),))))
    assert parsed.items[0].date.utcoffset() == timedelta(hours=5, minutes=30)


def test_internaldate_uses_english_months_and_negative_offsets():
    when = datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=3, minutes=30)))
    assert format_date(when) == "31-Dec-1999 23:59:59 -0330"


def test_strings_choose_atom_quoted_or_literal():
    assert encode_astring("INBOX") == b"INBOX"
    assert encode_astring("a]b") == b"a]b"
    assert encode_astring("NIL") == b'"NIL"'
    assert encode_astring("") == b'""'
    assert encode_astring("with space") == b'"with space"'
    assert encode_string('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert encode_string("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert encode_string("caf\u00e9") == b"{5}\r\ncaf\xc3\xa9"
    assert encode_string("x" * 2000).startswith(b"{2000}\r\n")


def test_mailbox_with_quote_backslash_or_8bit_is_escaped_or_literal():
    assert encode_response(ListResponse((), "/", 'a"b\\c')) == b'* LIST () "/" "a\\"b\\\\c"\r\n'
    assert encode_response(ListResponse((), "\\", "x")) == b'* LIST () "\\\\" x\r\n'
    assert encode_response(StatusResponse("line\nbreak", (("MESSAGES", 1),))) == \
        b"* STATUS {10}\r\nline\nbreak (MESSAGES 1)\r\n"


def test_resp_text_with_crlf_cannot_inject_a_second_response():
    wire = encode_response(Tagged("A1", "NO", "bad\r\nA2 OK injected"))
    assert wire == b"A1 NO bad  A2 OK injected\r\n"
    assert wire.count(b"\r\n") == 1


def test_text_that_looks_like_a_code_is_not_read_as_one():
    resp = Tagged("A1", "OK", "[ALERT] not really")
    assert parse_response(encode_response(resp)).code is None


def test_body_data_with_nul_is_sent_as_0x80_in_a_literal():
    assert encode_response(Fetch(1, (FetchBodySection("", b"a\x00b"),))) == b"* 1 FETCH (BODY[] {3}\r\na\x80b)\r\n"


def test_encode_responses_concatenates_in_order():
    assert encode_responses([Exists(1), Recent(0)]) == b"* 1 EXISTS\r\n* 0 RECENT\r\n"


def test_encoding_an_unknown_object_raises():
    with pytest.raises(TypeError):
        encode_response("* OK")  # type: ignore[arg-type]


@settings(max_examples=1500, deadline=None)
@given(responses())
def test_every_response_round_trips_through_the_parser(response):
    wire = encode_response(response)
    assert wire.endswith(b"\r\n")
    assert parse_response(wire) == response


@settings(max_examples=300, deadline=None)
@given(st.binary(), st.text())
def test_body_bytes_and_arbitrary_text_round_trip(data, text):
    resp = Fetch(1, (FetchBodySection("", data), FetchRfc822("RFC822", data)))
    parsed = parse_response(encode_response(resp))
    assert parsed.items[0].data == data.replace(b"\x00", b"\x80")
    tagged = Tagged("t", "OK", text)
    line = encode_response(tagged)
    assert line.count(b"\r\n") == 1 and line.isascii()
    assert parse_response(line) == tagged
