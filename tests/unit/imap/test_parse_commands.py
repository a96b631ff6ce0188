"""`parse_command` on example lines for every command (RFC 3501 §6 and §8, and the extensions)."""

from __future__ import annotations

import datetime as dt

import pytest

from whymail.imap import commands as c
from whymail.imap.errors import ImapParseError
from whymail.imap.fetchitems import BodySection, FetchAttr, Section
from whymail.imap.parser import parse_command
from whymail.imap.searchkeys import (
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SequenceKey,
    SizeKey,
    TextKey,
    UidKey,
)
from whymail.imap.sequence import STAR, SequenceSet, parse_sequence_set

S = parse_sequence_set


def test_rfc3501_section_8_sample_session() -> None:
    assert parse_command(b"a001 login mrc secret\r\n") == c.Login("a001", "mrc", "secret")
    assert parse_command(b"a002 select inbox") == c.Select("a002", "INBOX")
    assert parse_command(b"a003 fetch 12 full") == c.Fetch(
        "a003",
        S("12"),
        tuple(FetchAttr(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")),
    )
    assert parse_command(b"a004 fetch 12 body[header]") == c.Fetch(
        "a004", S("12"), (BodySection(Section(text="HEADER")),)
    )
    assert parse_command(b"a005 store 12 +flags \\deleted") == c.Store("a005", S("12"), "+", ("\\Deleted",))
    assert parse_command(b"a006 logout") == c.Logout("a006")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"abcd CAPABILITY", c.Capability("abcd")),
        (b"a002 NOOP", c.Noop("a002")),
        (b"A023 LOGOUT", c.Logout("A023")),
        (b"a001 STARTTLS", c.StartTls("a001")),
        (b"A001 AUTHENTICATE GSSAPI", c.Authenticate("A001", "GSSAPI")),
        (b"a AUTHENTICATE plain AGFsaWNlAHNlY3JldA==", c.Authenticate("a", "PLAIN", "AGFsaWNlAHNlY3JldA==")),
        (b"a AUTHENTICATE PLAIN =", c.Authenticate("a", "PLAIN", "=")),
        (b'a LOGIN "fred smith" "pass\\"wo\\\\rd"', c.Login("a", "fred smith", 'pass"wo\\rd')),
        (b"a LOGIN {4}\r\nfred {3+}\r\nabc", c.Login("a", "fred", "abc")),
        (b"A142 SELECT INBOX", c.Select("A142", "INBOX")),
        (b"A932 EXAMINE blurdybloop", c.Select("A932", "blurdybloop", read_only=True)),
        (b"a SELECT Inbox (CONDSTORE)", c.Select("a", "INBOX", condstore=True)),
        (
            b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
            c.Select("A02", "INBOX", qresync=c.QresyncParams(67890007, 20050715194045000, S("41,43:211,214:541"))),
        ),
        (
            b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 "
            b"15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))",
            c.Select(
                "B04",
                "INBOX",
                qresync=c.QresyncParams(
                    67890007,
                    90060115194045000,
                    S("1:29997"),
                    (
                        S("5000,7500,9000,9990:9999"),
                        S("15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997"),
                    ),
                ),
            ),
        ),
        (b"A003 CREATE owatagusiam/", c.Create("A003", "owatagusiam/")),
        (b't2 CREATE "Junk" (USE (\\Junk))', c.Create("t2", "Junk", ("\\Junk",))),
        (b"A683 DELETE blurdybloop", c.Delete("A683", "blurdybloop")),
        (b"A683 RENAME blurdybloop sarasoop", c.Rename("A683", "blurdybloop", "sarasoop")),
        (b"A002 SUBSCRIBE #news.comp.mail.mime", c.Subscribe("A002", "#news.comp.mail.mime")),
        (b"A002 UNSUBSCRIBE #news.comp.mail.mime", c.Unsubscribe("A002", "#news.comp.mail.mime")),
        (b'A682 LIST "" *', c.List("A682", "", ("*",))),
        (b"A101 LIST ~/Mail/ %", c.List("A101", "~/Mail/", ("%",))),
        (b'A02 LIST (SUBSCRIBED) "" "*"', c.List("A02", "", ("*",), selection=("SUBSCRIBED",))),
        (b'A04 LIST (special-use) "" *', c.List("A04", "", ("*",), selection=("SPECIAL-USE",))),
        (
            b'A05 LIST "" "*" RETURN (SPECIAL-USE CHILDREN)',
            c.List("A05", "", ("*",), returns=("SPECIAL-USE", "CHILDREN")),
        ),
        (
            b'A06 LIST () "" ("INBOX" "Drafts" %) RETURN (STATUS (MESSAGES UNSEEN))',
            c.List("A06", "", ("INBOX", "Drafts", "%"), return_status=("MESSAGES", "UNSEEN")),
        ),
        (b'A002 LSUB "#news." "comp.mail.*"', c.Lsub("A002", "#news.", "comp.mail.*")),
        (
            b"A042 STATUS blurdybloop (UIDNEXT MESSAGES highestmodseq)",
            c.Status("A042", "blurdybloop", ("UIDNEXT", "MESSAGES", "HIGHESTMODSEQ")),
        ),
        (b"FXXZ CHECK", c.Check("FXXZ")),
        (b"A341 CLOSE", c.Close("A341")),
        (b"a UNSELECT", c.Unselect("a")),
        (b"A202 EXPUNGE", c.Expunge("A202")),
        (b"A003 UID EXPUNGE 3000:3002", c.UidExpunge("A003", S("3000:3002"))),
        (b"A003 COPY 2:4 MEETING", c.Copy("A003", S("2:4"), "MEETING")),
        (b"a UID COPY 1:* Archive", c.Copy("a", S("1:*"), "Archive", uid=True)),
        (b"a MOVE 1,3 Trash", c.Move("a", S("1,3"), "Trash")),
        (b"a UID MOVE 42:69 foo", c.Move("a", S("42:69"), "foo", uid=True)),
        (b"a IDLE", c.Idle("a")),
        (b"A001 NAMESPACE", c.Namespace("A001")),
        (b"a ID NIL", c.Id("a", None)),
        (
            b'a023 ID ("name" "sodr" "version" "19.34" "os" NIL)',
            c.Id("a023", (("name", "sodr"), ("version", "19.34"), ("os", None))),
        ),
        (b"t1 ENABLE CONDSTORE x-good-extension", c.Enable("t1", ("CONDSTORE", "X-GOOD-EXTENSION"))),
    ],
)
def test_examples(line: bytes, expected: c.Command) -> None:
    assert parse_command(line) == expected


def test_mailbox_names_are_decoded_from_modified_utf7() -> None:
    assert parse_command(b"a SELECT Entw&APw-rfe") == c.Select("a", "Entwürfe")
    assert parse_command(b'a CREATE "~peter/mail/&U,BTFw-/&ZeVnLIqe-"') == c.Create("a", "~peter/mail/台北/日本語")
    assert parse_command(b"a LIST &ZeVnLIqe- *") == c.List("a", "日本語", ("*",))


def test_only_inbox_itself_is_case_insensitive() -> None:
    assert parse_command(b"a DELETE iNbOx").mailbox == "INBOX"  # type: ignore[union-attr]
    assert parse_command(b"a DELETE inbox/sub").mailbox == "inbox/sub"  # type: ignore[union-attr]
    assert parse_command(b"a LIST inbox *").reference == "inbox"  # type: ignore[union-attr]


def test_append_with_flags_and_date() -> None:
    message = b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nSubject: afternoon meeting\r\n\r\nHello Joe\r\n"
    line = b'A003 APPEND saved-messages (\\Seen) " 7-Feb-1994 21:52:25 -0800" {%d}\r\n' % len(message) + message
    date = dt.datetime(1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    assert parse_command(line) == c.Append(
        "A003", "saved-messages", (c.AppendMessage(("\\Seen",), date, message),)
    )


def test_multiappend() -> None:
    line = b"a APPEND INBOX {1+}\r\nx (\\Draft) {2+}\r\nyz"
    assert parse_command(line) == c.Append(
        "a", "INBOX", (c.AppendMessage((), None, b"x"), c.AppendMessage(("\\Draft",), None, b"yz"))
    )


def test_search_rfc3501_examples() -> None:
    assert parse_command(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == c.Search(
        "A282",
        AndKey((FlagKey("FLAGGED"), DateKey("SINCE", dt.date(1994, 2, 1)), NotKey(TextKey("FROM", "Smith")))),
    )
    assert parse_command(b"A284 SEARCH TEXT \"string not in mailbox\"") == c.Search(
        "A284", TextKey("TEXT", "string not in mailbox")
    )
    text = "Gödel-Eşi".encode()
    line = b"A285 SEARCH CHARSET UTF-8 TEXT {%d}\r\n" % len(text) + text
    assert parse_command(line) == c.Search("A285", TextKey("TEXT", "Gödel-Eşi"), charset="UTF-8")


def test_search_key_tree() -> None:
    line = (
        b"a UID SEARCH RETURN (MIN COUNT) OR (UNSEEN 1:5,*) KEYWORD $Junk HEADER X-Spam yes "
        b'LARGER 100 smaller 2000 uid 4:* MODSEQ "/flags/\\\\draft" all 620162338 on "3-Mar-2021" '
        b"NOT (ANSWERED DELETED) OR CC a BCC b"
    )
    assert parse_command(line) == c.Search(
        "a",
        AndKey(
            (
                OrKey(AndKey((FlagKey("UNSEEN"), SequenceKey(S("1:5,*")))), KeywordKey("KEYWORD", "$Junk")),
                HeaderKey("X-Spam", "yes"),
                SizeKey("LARGER", 100),
                SizeKey("SMALLER", 2000),
                UidKey(SequenceSet(((4, STAR),))),
                ModSeqKey(620162338, "/flags/\\draft", "ALL"),
                DateKey("ON", dt.date(2021, 3, 3)),
                NotKey(AndKey((FlagKey("ANSWERED"), FlagKey("DELETED")))),
                OrKey(TextKey("CC", "a"), TextKey("BCC", "b")),
            )
        ),
        return_options=("MIN", "COUNT"),
        uid=True,
    )
    assert parse_command(b"a SEARCH (SEEN)") == c.Search("a", FlagKey("SEEN"))
    assert parse_command(b"a SEARCH RETURN () ALL") == c.Search("a", FlagKey("ALL"), return_options=())
    assert parse_command(b"a SEARCH MODSEQ 5").key == ModSeqKey(5)  # type: ignore[union-attr]


def test_fetch_items_and_sections() -> None:
    assert parse_command(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])") == c.Fetch(
        "A654",
        S("2:4"),
        (FetchAttr("FLAGS"), BodySection(Section(text="HEADER.FIELDS", fields=("DATE", "FROM")))),
    )
    assert parse_command(b"A999 UID FETCH 4827313:4828442 FLAGS") == c.Fetch(
        "A999", S("4827313:4828442"), (FetchAttr("FLAGS"),), uid=True
    )
    fetch = parse_command(
        b"a fetch 1 (body.peek[1.2.mime] BODY[3.HEADER.FIELDS.NOT (Received)]<0.2048> body[]<10.20> "
        b"BODY[2] BODY[TEXT] RFC822 RFC822.HEADER RFC822.TEXT BODYSTRUCTURE BODY UID MODSEQ)"
    )
    assert isinstance(fetch, c.Fetch)
    assert fetch.items == (
        BodySection(Section((1, 2), "MIME"), peek=True),
        BodySection(Section((3,), "HEADER.FIELDS.NOT", ("Received",)), partial=(0, 2048)),
        BodySection(Section(), partial=(10, 20)),
        BodySection(Section((2,))),
        BodySection(Section(text="TEXT")),
        FetchAttr("RFC822"),
        FetchAttr("RFC822.HEADER"),
        FetchAttr("RFC822.TEXT"),
        FetchAttr("BODYSTRUCTURE"),
        FetchAttr("BODY"),
        FetchAttr("UID"),
        FetchAttr("MODSEQ"),
    )
    assert parse_command(b"a fetch 1:* fast").items == (  # type: ignore[union-attr]
        FetchAttr("FLAGS"), FetchAttr("INTERNALDATE"), FetchAttr("RFC822.SIZE"),
    )


def test_fetch_changedsince_and_vanished() -> None:
    assert parse_command(b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)") == c.Fetch(
        "s100", S("1:*"), (FetchAttr("FLAGS"),), uid=True, changed_since=12345, vanished=True
    )
    assert parse_command(b"a FETCH 1 FLAGS (CHANGEDSINCE 7)").changed_since == 7  # type: ignore[union-attr]


def test_store_variants() -> None:
    assert parse_command(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == c.Store("A003", S("2:4"), "+", ("\\Deleted",))
    assert parse_command(b"a STORE 1 -FLAGS.SILENT (\\Seen $Junk)") == c.Store(
        "a", S("1"), "-", ("\\Seen", "$Junk"), silent=True
    )
    assert parse_command(b"a UID STORE 1 FLAGS ()") == c.Store("a", S("1"), "", (), uid=True)
    assert parse_command(b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)") == c.Store(
        "d105", S("7,5,9"), "+", ("\\Deleted",), silent=True, unchanged_since=320162338
    )


@pytest.mark.parametrize(
    ("line", "tag", "reason"),
    [
        (b"a FROB", "a", "unknown command"),
        (b"a UID NOOP", "a", "unknown UID command"),
        (b"a LOGIN onlyuser", "a", "expected a space"),
        (b"a NOOP extra", "a", "unexpected trailing data"),
        (b"a FETCH 0 FLAGS", "a", "invalid sequence set"),
        (b"a FETCH 1 (FLAGS", "a", "expected"),
        (b"a FETCH 1 BODY[1.MIME", "a", "expected ]"),
        (b"a FETCH 1 BODY[MIME]", "a", "MIME needs a part number"),
        (b"a FETCH 1 FOO", "a", "unknown FETCH item"),
        (b"a FETCH 1 FLAGS (VANISHED)", "a", "VANISHED requires CHANGEDSINCE"),
        (b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "a", "only allowed in UID FETCH"),
        (b"a SEARCH FROB", "a", "unknown search key"),
        (b"a SEARCH CHARSET KOI8-R ALL", "a", "unsupported charset"),
        (b"a SEARCH SINCE 32-Jan-2020", "a", "invalid date"),
        (b"a SELECT &Jjo", "a", "modified UTF-7"),
        (b"a STATUS x (FOO)", "a", "STATUS item"),
        (b'a LOGIN "unterminated', "a", "unterminated quoted string"),
        (b"a LOGIN {10}\r\nshort", "a", "literal is shorter"),
        (b'a APPEND x "31-Feb-2020 10:00:00 +0000" {1}\r\nx', "a", "invalid date-time"),
        (b"+a NOOP", None, "tag"),
        (b"", None, "tag"),
        (b"a", "a", "expected a space"),
    ],
)
def test_errors_carry_tag_and_reason(line: bytes, tag: str | None, reason: str) -> None:
    with pytest.raises(ImapParseError) as info:
        parse_command(line)
    assert info.value.tag == tag
    assert reason in info.value.text
    assert info.value.text.isascii()


def test_error_text_quotes_only_a_short_sanitised_excerpt() -> None:
    with pytest.raises(ImapParseError) as info:
        parse_command(b"a " + "ü".encode() * 500)
    assert len(info.value.text) < 100
    assert all(" " <= ch <= "~" for ch in info.value.text)


def test_search_nesting_is_bounded() -> None:
    with pytest.raises(ImapParseError, match="too deeply"):
        parse_command(b"a SEARCH " + b"NOT " * 200 + b"ALL")
    with pytest.raises(ImapParseError, match="too deeply"):
        parse_command(b"a SEARCH " + b"(" * 200 + b"ALL" + b")" * 200)
