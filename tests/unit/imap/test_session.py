"""Session commands one by one (RFC 3501 §6), against MemoryStorage."""

from __future__ import annotations

import base64

import pytest

from whymail.imap import commands as c
from whymail.imap.grammar import parse_command
from whymail.imap.memory import MemoryStorage
from whymail.imap.session import Session, State
from whymail.imap.storage import StorageError

from .session_support import (
    PASSWORD,
    SIMPLE,
    USER,
    WITH_ATTACHMENT,
    Client,
    logged_in,
    make_message,
    new_session,
    selected,
    wire,
)


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


async def test_rfc3501_section8_style_session(storage):
    client = Client(new_session(storage))
    assert (await client.run("CAPABILITY"))[0].startswith("* CAPABILITY IMAP4rev1")
    login = await client.ok(f"LOGIN {USER} {PASSWORD}")
    assert "[CAPABILITY IMAP4rev1" in login[0]
    await client.append("INBOX", SIMPLE)
    await client.append("INBOX", make_message("second"))
    select = await client.ok("SELECT INBOX")
    assert "* 2 EXISTS" in select and "* 0 RECENT" in select
    full = await client.ok("FETCH 1 FULL")
    assert full[0].startswith('* 1 FETCH (FLAGS () INTERNALDATE "')
    assert 'ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "afternoon meeting"' in full[0]
    assert 'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT"' in full[0]
    header = await client.ok("FETCH 1 BODY[HEADER]")
    assert "Subject: afternoon meeting" in header[0] and "FLAGS (\\Seen)" in header[0]
    store = await client.ok("STORE 1 +FLAGS (\\Deleted)")
    assert store[0] == "* 1 FETCH (FLAGS (\\Seen \\Deleted))"
    assert await client.run("EXPUNGE") == ["* 1 EXPUNGE", "T OK EXPUNGE completed"]
    assert await client.run("LOGOUT") == ["* BYE WhyMail logging out", "T OK LOGOUT completed"]
    assert client.session.state is State.LOGOUT
    assert (await client.run("NOOP"))[-1].startswith("T BAD")


async def test_capabilities_follow_tls_and_state(storage):
    plain = Session(storage, new_session(storage).authenticator, tls_active=False)
    caps = plain.capabilities()
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    secure = new_session(storage)
    assert "AUTH=PLAIN" in secure.capabilities() and "AUTH=LOGIN" in secure.capabilities()
    assert "STARTTLS" not in secure.capabilities()
    client = await logged_in(storage)
    caps = client.session.capabilities()
    assert "AUTH=PLAIN" not in caps and "LOGINDISABLED" not in caps
    for cap in ("IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "SPECIAL-USE", "CHILDREN", "SASL-IR", "LITERAL+"):
        assert cap in caps


async def test_login_before_tls_is_refused_with_privacyrequired(storage):
    client = Client(new_session(storage, tls_active=False))
    assert (await client.run(f"LOGIN {USER} {PASSWORD}")) == ["T NO [PRIVACYREQUIRED] use STARTTLS first"]
    assert (await client.run("AUTHENTICATE PLAIN"))[0].startswith("T NO [PRIVACYREQUIRED]")
    assert await client.run("STARTTLS") == ["T OK begin TLS negotiation now"]
    client.session.tls_started()
    await client.ok(f"LOGIN {USER} {PASSWORD}")


async def test_plaintext_login_allowed_by_setting(storage):
    client = Client(new_session(storage, tls_active=False, allow_plaintext_login=True))
    await client.ok(f"LOGIN {USER} {PASSWORD}")


async def test_failed_login_is_authenticationfailed(storage):
    client = Client(new_session(storage))
    assert await client.run(f"LOGIN {USER} wrong") == ["T NO [AUTHENTICATIONFAILED] invalid credentials"]
    assert client.session.state is State.NOT_AUTHENTICATED
    assert client.session.failed_logins == 1


def _plain(authzid: str, user: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


async def test_authenticate_plain_with_initial_response(storage):
    client = Client(new_session(storage))
    lines = await client.run(f"AUTHENTICATE PLAIN {_plain('', USER, PASSWORD)}")
    assert lines[0].startswith("T OK [CAPABILITY") and client.session.state is State.AUTHENTICATED


async def test_authenticate_plain_multi_step(storage):
    client = Client(new_session(storage))
    assert await client.run("AUTHENTICATE PLAIN") == ["+ "]
    assert client.session.awaiting_continuation
    done = wire(await client.session.continue_authenticate(_plain(USER, USER, PASSWORD).encode() + b"\r\n"))
    assert done[0].startswith("T OK") and not client.session.awaiting_continuation


async def test_authenticate_plain_wrong_password_and_cancel(storage):
    client = Client(new_session(storage))
    await client.run("AUTHENTICATE PLAIN")
    bad = wire(await client.session.continue_authenticate(_plain("", USER, "nope").encode()))
    assert bad == ["T NO [AUTHENTICATIONFAILED] invalid credentials"]
    await client.run("AUTHENTICATE PLAIN")
    assert wire(await client.session.continue_authenticate(b"*\r\n")) == ["T BAD AUTHENTICATE cancelled"]
    await client.run("AUTHENTICATE PLAIN")
    assert wire(await client.session.continue_authenticate(b"!!!"))[0].startswith("T BAD")
    other = await client.run(f"AUTHENTICATE PLAIN {_plain('bob@example.com', USER, PASSWORD)}")
    assert other[0].startswith("T NO [AUTHORIZATIONFAILED]")


async def test_authenticate_login_mechanism(storage):
    client = Client(new_session(storage))
    assert await client.run("AUTHENTICATE LOGIN") == ["+ VXNlcm5hbWU6"]
    step = wire(await client.session.continue_authenticate(base64.b64encode(USER.encode())))
    assert step == ["+ UGFzc3dvcmQ6"]
    done = wire(await client.session.continue_authenticate(base64.b64encode(PASSWORD.encode())))
    assert done[0].startswith("T OK")


async def test_unknown_mechanism_is_no(storage):
    client = Client(new_session(storage))
    assert (await client.run("AUTHENTICATE CRAM-MD5"))[0].startswith("T NO")


@pytest.mark.parametrize(
    "line",
    ["SELECT INBOX", "LIST \"\" *", "FETCH 1 FLAGS", "STATUS INBOX (MESSAGES)", "IDLE", "ENABLE CONDSTORE"],
)
async def test_commands_before_login_are_bad(storage, line):
    client = Client(new_session(storage))
    assert (await client.run(line))[-1].startswith("T BAD")


@pytest.mark.parametrize(
    "line",
    ["FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "EXPUNGE", "CLOSE", "COPY 1 Trash",
     "MOVE 1 Trash", "UID FETCH 1 FLAGS", "CHECK", "UNSELECT"],
)
async def test_selected_commands_without_mailbox_are_bad(storage, line):
    client = await logged_in(storage)
    assert (await client.run(line)) == ["T BAD no mailbox selected"]


async def test_login_twice_is_bad(storage):
    client = await logged_in(storage)
    assert (await client.run(f"LOGIN {USER} {PASSWORD}"))[-1] == "T BAD already authenticated"


async def test_select_reports_mailbox_state(storage):
    client = await logged_in(storage)
    await client.append("INBOX", make_message("one"), flags="\\Seen")
    await client.append("INBOX", make_message("two"), flags="$Label")
    lines = await client.run("SELECT INBOX")
    assert lines[0] == "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label)"
    assert lines[1:4] == ["* 2 EXISTS", "* 0 RECENT", "* OK [UNSEEN 2] message 2 is first unseen"]
    assert any(line.startswith("* OK [UIDVALIDITY ") for line in lines)
    assert "* OK [UIDNEXT 3] predicted next UID" in lines
    assert any("[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in line for line in lines)
    assert any(line.startswith("* OK [HIGHESTMODSEQ ") for line in lines)
    assert lines[-1] == "T OK [READ-WRITE] SELECT completed"


async def test_examine_is_read_only(storage):
    client = await logged_in(storage)
    await client.append("INBOX", SIMPLE)
    lines = await client.run("EXAMINE INBOX")
    assert lines[-1] == "T OK [READ-ONLY] EXAMINE completed"
    assert "* OK [PERMANENTFLAGS ()] flags permitted" in lines
    fetched = await client.ok("FETCH 1 BODY[TEXT]")
    assert "FLAGS" not in fetched[0]
    assert (await client.run("STORE 1 +FLAGS (\\Seen)"))[-1].startswith("T NO [READ-ONLY]")
    assert (await client.run("EXPUNGE"))[-1].startswith("T NO")
    assert (await client.run("MOVE 1 Trash"))[-1].startswith("T NO")


async def test_select_missing_mailbox_deselects(storage):
    client = await selected(storage)
    lines = await client.run("SELECT Nope")
    assert lines[0] == "* OK [CLOSED] previous mailbox closed"
    assert lines[-1].startswith("T NO [NONEXISTENT]")
    assert client.session.state is State.AUTHENTICATED


async def test_create_delete_rename_and_list_children(storage):
    client = await logged_in(storage)
    await client.ok("CREATE Projects/2024/Q1")
    listing = await client.ok('LIST "" "Projects*"')
    assert listing[:3] == [
        '* LIST (\\HasChildren) "/" Projects',
        '* LIST (\\HasChildren) "/" Projects/2024',
        '* LIST (\\HasNoChildren) "/" Projects/2024/Q1',
    ]
    percent = await client.ok('LIST "" "Projects/%"')
    assert percent[:-1] == ['* LIST (\\HasChildren) "/" Projects/2024']
    assert (await client.run("CREATE Projects"))[-1].startswith("T NO [ALREADYEXISTS]")
    assert (await client.run("CREATE inbox"))[-1].startswith("T NO [ALREADYEXISTS]")
    await client.ok("RENAME Projects Work")
    names = [line.rsplit(" ", 1)[1] for line in (await client.ok('LIST "" *'))[:-1]]
    assert "Work/2024/Q1" in names and "Projects" not in names
    await client.ok("DELETE Work/2024/Q1")
    assert (await client.run("DELETE Work/2024/Q1"))[-1].startswith("T NO [NONEXISTENT]")
    assert (await client.run("DELETE INBOX"))[-1].startswith("T NO [CANNOT]")


async def test_list_empty_pattern_gives_delimiter(storage):
    client = await logged_in(storage)
    assert await client.run('LIST "" ""') == ['* LIST (\\Noselect) "/" ""', "T OK LIST completed"]


async def test_list_special_use_and_extended_selection(storage):
    client = await logged_in(storage)
    lines = await client.ok('LIST (SPECIAL-USE) "" *')
    uses = sorted(line.split(")")[0].split(" ")[-1] for line in lines[:-1])
    assert uses == ["\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"]
    await client.ok("CREATE Receipts")
    await client.ok("UNSUBSCRIBE Receipts")
    subscribed = await client.ok('LIST (SUBSCRIBED) "" "R*"')
    assert subscribed == ["T OK LIST completed"]
    status = await client.ok('LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN))')
    assert status[:2] == ['* LIST (\\HasNoChildren) "/" INBOX', "* STATUS INBOX (MESSAGES 0 UNSEEN 0)"]


async def test_create_with_special_use(storage):
    client = await logged_in(storage)
    await client.ok("CREATE Spam2 (USE (\\Junk))")
    assert (await client.ok('LIST "" Spam2'))[0] == '* LIST (\\HasNoChildren \\Junk) "/" Spam2'


async def test_subscribe_and_lsub(storage):
    client = await logged_in(storage)
    await client.ok("CREATE Lists/python")
    await client.ok("UNSUBSCRIBE Lists")
    lsub = await client.ok('LSUB "" "Lists*"')
    assert lsub[:-1] == ['* LSUB (\\HasNoChildren) "/" Lists/python']
    await client.ok("SUBSCRIBE Lists")
    assert len(await client.ok('LSUB "" "Lists*"')) == 3


async def test_list_encodes_utf7_names(storage):
    client = await logged_in(storage)
    await client.ok('CREATE "Entw&APw-rfe"')
    assert '"/" Entw&APw-rfe' in (await client.ok('LIST "" Entw*'))[0]


async def test_status_items(storage):
    client = await logged_in(storage)
    await client.append("INBOX", make_message("x"), flags="\\Seen")
    await client.append("INBOX", make_message("y"), flags="\\Deleted")
    lines = await client.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN DELETED)")
    assert lines[0] == "* STATUS INBOX (MESSAGES 2 RECENT 0 UIDNEXT 3 UNSEEN 1 DELETED 1)"
    assert (await client.run("STATUS Nope (MESSAGES)"))[-1].startswith("T NO [NONEXISTENT]")


async def test_append_appenduid_and_trycreate(storage):
    client = await logged_in(storage)
    first = await client.append("Sent", make_message("a"), flags="\\Seen", date="01-Jan-2024 10:00:00 +0100")
    assert first[-1].startswith("T OK [APPENDUID ") and first[-1].split()[4] == "1]"
    assert (await client.append("Missing", make_message("b")))[-1].startswith("T NO [TRYCREATE]")
    await client.ok("SELECT Sent")
    fetched = await client.ok("FETCH 1 (FLAGS INTERNALDATE)")
    assert fetched[0] == '* 1 FETCH (FLAGS (\\Seen) INTERNALDATE " 1-Jan-2024 10:00:00 +0100")'


async def test_append_to_selected_mailbox_announces_exists(storage):
    client = await selected(storage)
    lines = await client.append("INBOX", make_message("new"))
    assert lines[0] == "* 1 EXISTS" and lines[-1].startswith("T OK [APPENDUID")


async def test_expunge_sequence_numbers_shift(storage):
    client = await logged_in(storage)
    for i in range(1, 6):
        await client.append("INBOX", make_message(f"m{i}"))
    await client.ok("SELECT INBOX")
    await client.ok("STORE 2,3,5 +FLAGS.SILENT (\\Deleted)")
    # RFC 3501 §7.4.1: each EXPUNGE renumbers the messages after it.
    assert await client.run("EXPUNGE") == ["* 2 EXPUNGE", "* 2 EXPUNGE", "* 3 EXPUNGE", "T OK EXPUNGE completed"]
    assert await client.run("UID SEARCH ALL") == ["* SEARCH 1 4", "T OK UID SEARCH completed"]


async def test_uid_expunge_only_given_uids(storage):
    client = await logged_in(storage)
    for i in range(3):
        await client.append("INBOX", make_message(f"m{i}"), flags="\\Deleted")
    await client.ok("SELECT INBOX")
    assert await client.run("UID EXPUNGE 2:3") == ["* 2 EXPUNGE", "* 2 EXPUNGE", "T OK UID EXPUNGE completed"]
    assert await client.run("SEARCH ALL") == ["* SEARCH 1", "T OK SEARCH completed"]


async def test_close_expunges_silently_unselect_does_not(storage):
    client = await logged_in(storage)
    await client.append("INBOX", make_message("a"), flags="\\Deleted")
    await client.append("INBOX", make_message("b"), flags="\\Deleted")
    await client.ok("SELECT INBOX")
    assert await client.run("UNSELECT") == ["T OK UNSELECT completed"]
    await client.ok("SELECT INBOX")
    await client.ok("STORE 1 -FLAGS (\\Deleted)")
    assert await client.run("CLOSE") == ["T OK CLOSE completed"]
    assert client.session.state is State.AUTHENTICATED
    assert (await client.ok("STATUS INBOX (MESSAGES)"))[0] == "* STATUS INBOX (MESSAGES 1)"


async def test_copy_returns_copyuid(storage):
    client = await logged_in(storage)
    for i in range(3):
        await client.append("INBOX", make_message(f"m{i}"))
    await client.append("Archive", make_message("old"))
    await client.ok("SELECT INBOX")
    lines = await client.run("COPY 2:3 Archive")
    assert lines[-1].startswith("T OK [COPYUID ") and lines[-1].endswith(" 2:3 2:3] COPY completed")
    assert (await client.run("COPY 1 Nowhere"))[-1].startswith("T NO [TRYCREATE]")
    assert (await client.run("COPY 9 Archive"))[-1].startswith("T BAD")
    assert (await client.run("UID COPY 99 Archive"))[-1] == "T OK UID COPY completed (no messages)"


async def test_move_sends_copyuid_then_expunges(storage):
    client = await logged_in(storage)
    for i in range(3):
        await client.append("INBOX", make_message(f"m{i}"))
    await client.ok("SELECT INBOX")
    lines = await client.run("MOVE 1,3 Trash")
    assert lines[0].startswith("* OK [COPYUID ") and lines[0].endswith(" 1,3 1:2] moved")
    assert lines[1:] == ["* 1 EXPUNGE", "* 2 EXPUNGE", "T OK MOVE completed"]
    uid_move = await client.run("UID MOVE 2 Trash")
    assert uid_move[1:] == ["* 1 EXPUNGE", "T OK UID MOVE completed"]
    assert (await client.ok("STATUS Trash (MESSAGES)"))[0] == "* STATUS Trash (MESSAGES 3)"


async def test_store_variants(storage):
    client = await logged_in(storage)
    await client.append("INBOX", make_message("a"))
    await client.append("INBOX", make_message("b"))
    await client.ok("SELECT INBOX")
    assert (await client.run("STORE 1:2 +FLAGS (\\Seen $Work)"))[:2] == [
        "* 1 FETCH (FLAGS (\\Seen $Work))",
        "* 2 FETCH (FLAGS (\\Seen $Work))",
    ]
    assert (await client.run("STORE 1 -FLAGS ($Work)"))[0] == "* 1 FETCH (FLAGS (\\Seen))"
    assert (await client.run("STORE 2 FLAGS (\\Answered)"))[0] == "* 2 FETCH (FLAGS (\\Answered))"
    assert await client.run("STORE 1 +FLAGS.SILENT (\\Flagged)") == ["T OK STORE completed"]
    assert (await client.run("UID STORE 2 +FLAGS (\\Draft)"))[0] == "* 2 FETCH (UID 2 FLAGS (\\Answered \\Draft))"
    assert (await client.run("STORE 3 +FLAGS (\\Seen)")) == ["T BAD invalid message sequence number"]
    assert (await client.run("UID STORE 3 +FLAGS (\\Seen)")) == ["T OK UID STORE completed"]


async def test_fetch_invalid_sequence_number_is_bad_but_uid_fetch_ignores(storage):
    client = await logged_in(storage)
    await client.append("INBOX", make_message("a"))
    await client.ok("SELECT INBOX")
    assert await client.run("FETCH 2 FLAGS") == ["T BAD invalid message sequence number"]
    assert await client.run("UID FETCH 5:7 FLAGS") == ["T OK UID FETCH completed"]
    assert await client.run("UID FETCH 5:* FLAGS") == ["* 1 FETCH (UID 1 FLAGS ())", "T OK UID FETCH completed"]


async def test_fetch_on_empty_mailbox_with_star(storage):
    client = await selected(storage)
    assert await client.run("FETCH 1:* FLAGS") == ["T OK FETCH completed"]
    assert await client.run("SEARCH ALL") == ["* SEARCH", "T OK SEARCH completed"]


async def test_body_fetch_sets_seen_peek_does_not(storage):
    client = await logged_in(storage)
    await client.append("INBOX", SIMPLE)
    await client.append("INBOX", SIMPLE)
    await client.ok("SELECT INBOX")
    peek = await client.ok("FETCH 1 BODY.PEEK[TEXT]")
    assert "FLAGS" not in peek[0]
    assert (await client.ok("FETCH 1 FLAGS"))[0] == "* 1 FETCH (FLAGS ())"
    body = await client.ok("FETCH 1 RFC822.TEXT")
    assert body[0].endswith(" FLAGS (\\Seen))")
    with_flags = await client.ok("FETCH 2 (FLAGS BODY[])")
    assert with_flags[0].startswith("* 2 FETCH (FLAGS (\\Seen) BODY[] {")
    again = await client.ok("FETCH 2 BODY[]")
    assert "FLAGS" not in again[0]


async def test_rfc822_items(storage):
    client = await logged_in(storage)
    await client.append("INBOX", SIMPLE)
    await client.ok("SELECT INBOX")
    lines = await client.ok("FETCH 1 (RFC822.SIZE RFC822.HEADER)")
    assert lines[0].startswith(f"* 1 FETCH (RFC822.SIZE {len(SIMPLE)} RFC822.HEADER {{")
    full = await client.ok("FETCH 1 RFC822")
    assert f"RFC822 {{{len(SIMPLE)}}}" in full[0]


async def test_fetch_sections_of_message_with_attachment(storage):
    client = await logged_in(storage)
    await client.append("INBOX", WITH_ATTACHMENT)
    await client.ok("SELECT INBOX")
    structure = (await client.ok("FETCH 1 BODYSTRUCTURE"))[0]
    assert '("APPLICATION" "PDF" ("NAME" "report.pdf") NIL NIL "BASE64" 36 NIL ("ATTACHMENT" ("FILENAME" "report.pdf"))' in structure
    assert structure.endswith('"MIXED" ("BOUNDARY" "XYZ") NIL NIL NIL))')
    part1 = (await client.ok("FETCH 1 BODY.PEEK[1]"))[0]
    assert part1 == "* 1 FETCH (BODY[1] {42}\r\nNumbers are up. Caf=C3=A9 budget approved.)"
    mime = (await client.ok("FETCH 1 BODY.PEEK[2.MIME]"))[0]
    assert "Content-Disposition: attachment" in mime
    partial = (await client.ok("FETCH 1 BODY.PEEK[2]<4.6>"))[0]
    assert partial == "* 1 FETCH (BODY[2]<4> {6}\r\nRi0xLj)"
    fields = (await client.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (TO CC)]"))[0]
    assert fields.startswith("* 1 FETCH (BODY[HEADER.FIELDS (TO CC)] {")
    assert "To: Bob" in fields and "Cc: Carol" in fields and "Subject" not in fields
    missing = (await client.ok("FETCH 1 BODY.PEEK[7]"))[0]
    assert missing == "* 1 FETCH (BODY[7] {0}\r\n)"


async def test_id_namespace_enable_noop(storage):
    client = await logged_in(storage)
    assert (await client.run('ID ("name" "test")'))[0].startswith('* ID ("name" "WhyMail"')
    assert (await client.run("NAMESPACE"))[0] == '* NAMESPACE (("" "/")) NIL NIL'
    assert (await client.run("ENABLE CONDSTORE X-UNKNOWN"))[0] == "* ENABLED CONDSTORE"
    assert (await client.run("ENABLE CONDSTORE"))[0] == "* ENABLED"
    assert await client.run("NOOP") == ["T OK NOOP completed"]


async def test_parse_error_rendering(storage):
    session = new_session(storage)
    from whymail.imap.errors import ImapParseError

    try:
        parse_command(b"T SEARCH CHARSET KOI8-R ALL")
    except ImapParseError as err:
        assert wire(session.parse_error(err)) == ["T NO [BADCHARSET (US-ASCII UTF-8)] unsupported charset"]
    assert wire(session.parse_error(ImapParseError("junk"))) == ["* BAD junk"]


async def test_search_charset_checked_by_session(storage):
    client = await selected(storage)
    command = c.Search("z1", parse_command(b"t SEARCH ALL").key, charset="ISO-2022-JP")
    assert wire(await client.session.handle(command)) == ["T NO [BADCHARSET (US-ASCII UTF-8)] unsupported charset"]


class _Broken(MemoryStorage):
    async def list_mailboxes(self, account):
        raise RuntimeError("boom")

    async def get_mailbox(self, account, name):
        raise StorageError("UNAVAILABLE", "database down")


async def test_unexpected_errors_become_serverbug():
    client = await logged_in(_Broken())
    assert await client.run('LIST "" *') == ["T NO [SERVERBUG] internal server error"]
    assert await client.run("SELECT INBOX") == ["T NO [UNAVAILABLE] database down"]


async def test_idle_in_authenticated_state(storage):
    client = await logged_in(storage)
    assert await client.run("IDLE") == ["+ idling"]
    assert await client.session.idle_wait(0.01) == []
    assert wire(await client.session.idle_done()) == ["T OK IDLE terminated"]


async def test_fetch_nested_message_parts(storage):
    from .session_support import NESTED

    client = await logged_in(storage)
    await client.append("INBOX", NESTED)
    await client.ok("SELECT INBOX")
    structure = (await client.ok("FETCH 1 BODYSTRUCTURE"))[0]
    assert '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' in structure
    assert '(NIL "inner subject" (("Eve" NIL "eve" "example.com"))' in structure
    text = (await client.ok("FETCH 1 BODY.PEEK[2.TEXT]"))[0]
    assert text == "* 1 FETCH (BODY[2.TEXT] {15}\r\ninner body text)"
    header = (await client.ok("FETCH 1 BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]"))[0]
    assert "Subject: inner subject" in header
    envelope = (await client.ok("FETCH 1 ENVELOPE"))[0]
    assert '"Fwd: hello"' in envelope


ALL_LINES = [
    "CAPABILITY", "NOOP", "ID NIL", "ENABLE CONDSTORE", "NAMESPACE", "STARTTLS", "SELECT INBOX",
    "EXAMINE Sent", "CREATE x", "DELETE x", "RENAME Junk Spam", "SUBSCRIBE INBOX", "UNSUBSCRIBE INBOX",
    'LIST "" *', 'LSUB "" *', "STATUS INBOX (MESSAGES)", "CHECK", "SEARCH ALL", "FETCH 1:* FLAGS",
    "STORE 1 +FLAGS (\\Seen)", "COPY 1 Trash", "MOVE 1 Trash", "UID EXPUNGE 1", "EXPUNGE", "UNSELECT",
    "CLOSE", f"LOGIN {USER} {PASSWORD}", "AUTHENTICATE PLAIN =", "LOGOUT",
]


@pytest.mark.parametrize("state", ["fresh", "authenticated", "selected", "logged out"])
async def test_every_command_in_every_state_ends_with_a_tagged_response(storage, state):
    from whymail.imap.responses import Code, Tagged

    for line in ALL_LINES:
        if state == "fresh":
            client = Client(new_session(storage))
        elif state == "authenticated":
            client = await logged_in(storage)
        else:
            client = await selected(storage)
            await client.append("INBOX", SIMPLE)
            if state == "logged out":
                await client.ok("LOGOUT")
        responses = await client.responses(line)
        assert isinstance(responses[-1], Tagged), (state, line, responses)
        assert responses[-1].code != Code("SERVERBUG"), (state, line, responses)


async def test_command_during_authenticate_cancels_it(storage):
    client = Client(new_session(storage))
    await client.run("AUTHENTICATE PLAIN")
    assert await client.run("NOOP") == ["T BAD expected DONE or an AUTHENTICATE response", "T OK NOOP completed"]
    assert not client.session.awaiting_continuation


async def test_bad_line_during_idle_ends_idle(storage):
    from whymail.imap.errors import ImapParseError

    client = await selected(storage)
    assert await client.run("IDLE") == ["+ idling"]
    assert wire(client.session.parse_error(ImapParseError("expected DONE to end IDLE"))) == [
        "T BAD expected DONE to end IDLE"
    ]
    assert not client.session.idling
    assert await client.run("NOOP") == ["T OK NOOP completed"]


async def test_list_percent_shows_parent_that_only_has_children(storage):
    client = await logged_in(storage)
    await client.ok("CREATE a/b")
    await client.ok("DELETE a")
    assert (await client.ok('LIST "" %'))[-2] == '* LIST (\\Noselect \\HasChildren) "/" a'
    assert '* LIST (\\HasNoChildren) "/" a/b' in await client.ok('LIST "" *')
    assert not any(line.endswith('"/" a') for line in await client.ok('LIST "" *'))
