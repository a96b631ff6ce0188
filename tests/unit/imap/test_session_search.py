"""SEARCH keys, table-driven (RFC 3501 §6.4.4), over a small fixed mailbox."""

from __future__ import annotations

import pytest

from whymail.imap.memory import MemoryStorage

from .session_support import NESTED, SIMPLE, WITH_ATTACHMENT, Client, logged_in, make_message

# 1: SIMPLE (seen, 1994 Date, internal 2024-01-10)      2: WITH_ATTACHMENT (flagged, answered)
# 3: NESTED ($Work, deleted)                              4: small "tiny" message, draft, internal 2024-02-01
MAILBOX = [
    (SIMPLE, "\\Seen", "10-Jan-2024 12:00:00 +0000"),
    (WITH_ATTACHMENT, "\\Flagged \\Answered", "15-Jan-2024 12:00:00 +0000"),
    (NESTED, "$Work \\Deleted", "20-Jan-2024 23:30:00 -0500"),
    (make_message("tiny", "x", sender="Zed <zed@example.org>"), "\\Draft", "01-Feb-2024 00:10:00 +0100"),
]

CASES = [
    ("ALL", "1 2 3 4"),
    ("SEEN", "1"),
    ("UNSEEN", "2 3 4"),
    ("FLAGGED", "2"),
    ("UNFLAGGED", "1 3 4"),
    ("ANSWERED", "2"),
    ("UNANSWERED", "1 3 4"),
    ("DELETED", "3"),
    ("UNDELETED", "1 2 4"),
    ("DRAFT", "4"),
    ("UNDRAFT", "1 2 3"),
    ("NEW", ""),
    ("RECENT", ""),
    ("OLD", "1 2 3 4"),
    ("KEYWORD $Work", "3"),
    ("KEYWORD $work", "3"),
    ("UNKEYWORD $Work", "1 2 4"),
    ("FROM fred", "1"),
    ("FROM EXAMPLE.COM", "2 3"),
    ("TO bob", "2"),
    ("CC carol", "2"),
    ("BCC anyone", ""),
    ('SUBJECT "afternoon MEETING"', "1"),
    ("SUBJECT quarterly", "2"),
    ("SUBJECT r\u00e9port", None),  # 8-bit needs CHARSET UTF-8 and a literal: see the test below
    ("BODY budget", "2"),
    ("BODY JVBERi0", ""),  # base64 attachments are not text
    ("BODY inner", "3"),
    ("TEXT inner", "3"),
    ("TEXT Blurdybloop", "1"),
    ("TEXT tomorrow", "1"),
    ('HEADER X-Priority ""', "2"),
    ("HEADER X-Priority 1", "2"),
    ("HEADER Message-Id B27397", "1"),
    ("LARGER 320", "2 3"),
    ("LARGER 602", ""),
    ("SMALLER 311", "4"),
    ("SMALLER 200", "4"),
    ("BEFORE 15-Jan-2024", "1"),
    ("ON 15-Jan-2024", "2"),
    ("ON 20-Jan-2024", "3"),
    ("SINCE 20-Jan-2024", "3 4"),
    ("SENTBEFORE 1-Jan-2000", "1"),
    ("SENTON 1-Mar-2022", "2"),
    ("SENTSINCE 2-Mar-2022", "3 4"),
    ("1:2", "1 2"),
    ("2,4", "2 4"),
    ("*", "4"),
    ("UID 3:*", "3 4"),
    ("NOT SEEN", "2 3 4"),
    ("OR SEEN DRAFT", "1 4"),
    ("OR (SEEN FLAGGED) DELETED", "3"),
    ("UNSEEN UNDELETED", "2 4"),
    ("(FLAGGED ANSWERED)", "2"),
    ("NOT (OR FROM fred FROM zed)", "2 3"),
    ("CHARSET UTF-8 FROM zed", "4"),
    ("CHARSET US-ASCII ALL", "1 2 3 4"),
]


async def _mailbox(storage: MemoryStorage) -> Client:
    client = await logged_in(storage)
    for data, flags, date in MAILBOX:
        await client.append("INBOX", data, flags=flags, date=date)
    await client.ok("SELECT INBOX")
    return client


@pytest.mark.parametrize(("criteria", "expected"), [case for case in CASES if case[1] is not None])
async def test_search_key(criteria, expected):
    client = await _mailbox(MemoryStorage())
    lines = await client.run(f"SEARCH {criteria}")
    assert lines == [f"* SEARCH {expected}".rstrip(), "T OK SEARCH completed"]


async def test_search_utf8_literal():
    client = await _mailbox(MemoryStorage())
    word = "r\u00e9port".encode()
    lines = await client.run(b"SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(word) + word)
    assert lines == ["* SEARCH 2", "T OK SEARCH completed"]
    cafe = "CAF\u00c9".encode()
    lines = await client.run(b"SEARCH CHARSET UTF-8 BODY {%d}\r\n" % len(cafe) + cafe)
    assert lines == ["* SEARCH 2", "T OK SEARCH completed"]


async def test_uid_search_returns_uids():
    storage = MemoryStorage()
    client = await _mailbox(storage)
    await client.ok("STORE 1 +FLAGS (\\Deleted)")
    await client.ok("EXPUNGE")
    assert await client.run("UID SEARCH UNDELETED") == ["* SEARCH 2 4", "T OK UID SEARCH completed"]
    assert await client.run("SEARCH UNDELETED") == ["* SEARCH 1 2", "T OK SEARCH completed"]


async def test_search_return_options():
    client = await _mailbox(MemoryStorage())
    lines = await client.run("SEARCH RETURN (MIN MAX COUNT) UNSEEN")
    assert lines[0].endswith("MIN 2 MAX 4 COUNT 3")
    assert (await client.run("UID SEARCH RETURN () ALL"))[0].endswith("UID ALL 1:4")
