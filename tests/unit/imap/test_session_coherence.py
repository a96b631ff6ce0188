"""Two sessions on one mailbox: untagged updates arrive, but EXPUNGE only when allowed (RFC 3501 §7.4.1)."""

from __future__ import annotations

import asyncio

import pytest

from whymail.imap.memory import MemoryStorage

from .session_support import make_message, selected, wire


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


async def _two(storage: MemoryStorage, messages: int = 3):
    a = await selected(storage)
    for i in range(messages):
        await a.append("INBOX", make_message(f"m{i}"))
    b = await selected(storage)
    return a, b


async def test_other_session_sees_exists_after_append(storage):
    a, b = await _two(storage)
    await a.append("INBOX", make_message("new"))
    assert await b.run("NOOP") == ["* 4 EXISTS", "T OK NOOP completed"]
    assert await b.run("NOOP") == ["T OK NOOP completed"]


async def test_exists_may_arrive_during_fetch(storage):
    a, b = await _two(storage)
    await a.append("INBOX", make_message("new"))
    lines = await b.run("FETCH 1 FLAGS")
    assert lines == ["* 1 FETCH (FLAGS ())", "* 4 EXISTS", "T OK FETCH completed"]


async def test_other_session_sees_flag_change(storage):
    a, b = await _two(storage)
    await a.ok("STORE 2 +FLAGS (\\Flagged)")
    assert await b.run("NOOP") == ["* 2 FETCH (UID 2 FLAGS (\\Flagged))", "T OK NOOP completed"]


async def test_own_store_is_not_announced_twice(storage):
    a, _ = await _two(storage)
    assert await a.run("STORE 2 +FLAGS (\\Flagged)") == ["* 2 FETCH (FLAGS (\\Flagged))", "T OK STORE completed"]
    assert await a.run("NOOP") == ["T OK NOOP completed"]


async def test_expunge_waits_until_noop_not_during_fetch_store_search(storage):
    a, b = await _two(storage)
    await a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    fetch = await b.run("FETCH 1:3 UID")
    assert fetch == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)", "T OK FETCH completed"]
    store = await b.run("STORE 3 +FLAGS (\\Seen)")
    assert store == ["* 3 FETCH (FLAGS (\\Seen))", "T OK STORE completed"]
    assert await b.run("SEARCH ALL") == ["* SEARCH 1 2 3", "T OK SEARCH completed"]
    assert await b.run("UID SEARCH ALL") == ["* SEARCH 1 2 3", "T OK UID SEARCH completed"]
    assert (await b.run("UID FETCH 1 FLAGS"))[-1] == "T OK UID FETCH completed"
    assert await b.run("NOOP") == ["* 2 EXPUNGE", "T OK NOOP completed"]
    assert await b.run("SEARCH ALL") == ["* SEARCH 1 2", "T OK SEARCH completed"]


async def test_fetching_body_of_message_expunged_elsewhere_is_expungeissued(storage):
    a, b = await _two(storage)
    await a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    lines = await b.run("FETCH 1:2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert lines[0].startswith("* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)]")
    assert lines[-1] == "T NO [EXPUNGEISSUED] some messages were expunged"
    assert await b.run("CHECK") == ["* 1 EXPUNGE", "T OK CHECK completed"]


async def test_expunge_announced_by_other_commands_after_deferral(storage):
    a, b = await _two(storage)
    await a.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    await b.ok("FETCH 1 FLAGS")
    assert await b.run('STATUS Trash (MESSAGES)') == [
        "* STATUS Trash (MESSAGES 0)", "* 3 EXPUNGE", "T OK STATUS completed",
    ]


async def test_idle_returns_update_from_other_session(storage):
    a, b = await _two(storage)
    assert await b.run("IDLE") == ["+ idling"]
    waiter = asyncio.create_task(b.session.idle_wait(5))
    await asyncio.sleep(0)
    await a.append("INBOX", make_message("while idle"))
    assert wire(await asyncio.wait_for(waiter, 5)) == ["* 4 EXISTS"]
    await a.ok("STORE 1 +FLAGS (\\Deleted)")
    await a.ok("EXPUNGE")
    updates = wire(await b.session.idle_wait(5))
    assert updates == ["* 1 EXPUNGE"]
    assert wire(await b.session.idle_done()) == ["T OK IDLE terminated"]
    assert await b.run("NOOP") == ["T OK NOOP completed"]


async def test_idle_wait_times_out_quietly(storage):
    _, b = await _two(storage)
    await b.run("IDLE")
    assert await b.session.idle_wait(0.02) == []
    assert wire(await b.session.idle_done()) == ["T OK IDLE terminated"]
    assert wire(await b.session.idle_done()) == ["* BAD not idling"]


async def test_idle_delivers_deferred_expunge_immediately(storage):
    a, b = await _two(storage)
    await a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await a.ok("EXPUNGE")
    await b.ok("FETCH 1 FLAGS")
    assert await b.run("IDLE") == ["+ idling", "* 1 EXPUNGE"]
    await b.session.idle_done()


async def test_move_elsewhere_expunges_here_and_exists_there(storage):
    a, b = await _two(storage)
    watcher = await selected(storage, "Archive")
    await a.ok("MOVE 1 Archive")
    assert await b.run("NOOP") == ["* 1 EXPUNGE", "T OK NOOP completed"]
    assert await watcher.run("NOOP") == ["* 1 EXISTS", "T OK NOOP completed"]


async def test_condstore_updates_carry_modseq(storage):
    a, b = await _two(storage)
    await b.ok("ENABLE CONDSTORE")
    await a.ok("STORE 1 +FLAGS (\\Answered)")
    lines = await b.run("NOOP")
    assert lines[0].startswith("* 1 FETCH (UID 1 FLAGS (\\Answered) MODSEQ (")


async def test_unchangedsince_reports_modified(storage):
    a, b = await _two(storage)
    fetched = await b.run("FETCH 1:3 (MODSEQ)")
    modseqs = [int(line.split("MODSEQ (")[1].split(")")[0]) for line in fetched[:3]]
    await a.ok("STORE 2 +FLAGS (\\Seen)")
    lines = await b.run(f"STORE 1:3 (UNCHANGEDSINCE {max(modseqs)}) +FLAGS (\\Flagged)")
    assert lines[-1] == "T OK [MODIFIED 2] STORE completed"
    assert lines[0].startswith("* 1 FETCH (FLAGS (\\Flagged) MODSEQ (")
    assert lines[1].startswith("* 3 FETCH (FLAGS (\\Flagged) MODSEQ (")
    assert lines[2].startswith("* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (")  # the other session's change
    uid_lines = await b.run("UID STORE 1:3 (UNCHANGEDSINCE 1) +FLAGS (\\Draft)")
    assert uid_lines[-1] == "T OK [MODIFIED 1:3] UID STORE completed"


async def test_fetch_changedsince(storage):
    a, b = await _two(storage)
    before = int((await b.run("FETCH 3 MODSEQ"))[0].split("MODSEQ (")[1].split(")")[0])
    await a.ok("STORE 2 +FLAGS (\\Seen)")
    await b.ok("NOOP")
    lines = await b.run(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")
    assert len(lines) == 2 and lines[0].startswith("* 2 FETCH (FLAGS (\\Seen) MODSEQ (")


async def test_select_condstore_and_search_modseq(storage):
    a = await selected(storage)
    await a.append("INBOX", make_message("x"))
    await a.append("INBOX", make_message("y"))
    lines = await a.run("SELECT INBOX (CONDSTORE)")
    assert any("HIGHESTMODSEQ" in line for line in lines)
    await a.ok("STORE 2 +FLAGS (\\Seen)")
    modseq = int((await a.run("FETCH 2 MODSEQ"))[0].split("MODSEQ (")[1].split(")")[0])
    assert await a.run(f"SEARCH MODSEQ {modseq}") == [f"* SEARCH 2 (MODSEQ {modseq})", "T OK SEARCH completed"]


async def test_starred_virtual_mailbox_follows_flags(storage):
    a, _ = await _two(storage)
    starred = await selected(storage, "Starred")
    await a.ok("STORE 1,3 +FLAGS (\\Flagged)")
    assert await starred.run("NOOP") == ["* 2 EXISTS", "T OK NOOP completed"]
    subjects = await starred.run("FETCH 1:2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert "Subject: m0" in subjects[0] and "Subject: m2" in subjects[1]
    await starred.ok("STORE 1 -FLAGS (\\Flagged)")
    assert (await starred.run("NOOP")) == ["* 1 EXPUNGE", "T OK NOOP completed"]
    assert await a.run("NOOP") == ["* 1 FETCH (UID 1 FLAGS ())", "T OK NOOP completed"]
    assert (await starred.run("MOVE 1 Trash"))[-1].startswith("T NO [CANNOT]")
