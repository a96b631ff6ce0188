"""Property: random commands from two sessions never make `handle` raise, never send EXPUNGE during
FETCH/STORE/SEARCH/COPY, and after a NOOP each session's view equals the storage."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whymail.imap import responses as r
from whymail.imap.memory import MemoryStorage
from whymail.imap.storage import Account

from .session_support import USER, Client, make_message, selected

FLAGS = st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "$Work", "\\Answered"])
SEQ = st.sampled_from(["1", "2", "3", "1:2", "2:*", "*", "1:*", "5", "3,1"])


@st.composite
def command(draw) -> tuple[int, str | bytes]:
    who = draw(st.integers(0, 1))
    kind = draw(st.sampled_from(["append", "store", "uidstore", "expunge", "uidexpunge", "fetch", "uidfetch",
                                 "search", "copy", "move", "noop", "reselect", "idle", "status"]))
    seq = draw(SEQ)
    flag = draw(FLAGS)
    line: str | bytes = {
        "store": f"STORE {seq} {draw(st.sampled_from(['+', '-', '']))}FLAGS ({flag})",
        "uidstore": f"UID STORE {seq} +FLAGS.SILENT ({flag})",
        "expunge": "EXPUNGE",
        "uidexpunge": f"UID EXPUNGE {seq}",
        "fetch": f"FETCH {seq} (UID FLAGS BODY[HEADER.FIELDS (SUBJECT)])",
        "uidfetch": f"UID FETCH {seq} (FLAGS RFC822.SIZE)",
        "search": f"SEARCH OR {flag.lstrip(chr(92)).upper() if flag.startswith(chr(92)) else 'KEYWORD ' + flag} SUBJECT m",
        "copy": f"COPY {seq} Archive",
        "move": f"UID MOVE {seq} Trash",
        "noop": "NOOP",
        "reselect": "SELECT INBOX",
        "idle": "IDLE",
        "status": "STATUS INBOX (MESSAGES UNSEEN)",
    }.get(kind, "")
    if kind == "append":
        data = make_message(f"m{draw(st.integers(0, 99))}")
        line = b'APPEND INBOX (%s) {%d}\r\n' % (flag.encode(), len(data)) + data
    return who, line


class _ClientModel:
    """What a client knows: the message count, kept from EXISTS and EXPUNGE."""

    def __init__(self, count: int) -> None:
        self.count = count

    def apply(self, responses: list[r.Response], during: str) -> None:
        for resp in responses:
            if isinstance(resp, r.Exists):
                assert resp.count >= self.count - 0  # EXISTS never shrinks the mailbox (RFC 3501 §7.3.1)
                self.count = resp.count
            elif isinstance(resp, r.Expunge):
                assert not during.startswith(("FETCH", "STORE", "SEARCH", "COPY", "UID FETCH", "UID STORE",
                                              "UID SEARCH", "UID COPY")), during
                assert 1 <= resp.number <= self.count
                self.count -= 1
            elif isinstance(resp, r.Fetch):
                assert 1 <= resp.number <= self.count


async def _run(commands: list[tuple[int, str | bytes]]) -> None:
    storage = MemoryStorage()
    clients = [await selected(storage), await selected(storage)]
    for _ in range(3):
        await clients[0].append("INBOX", make_message("seed"))
    models = [_ClientModel(0), _ClientModel(0)]
    models[0].count = 3
    await clients[1].ok("NOOP")
    models[1].count = 3
    for who, line in commands:
        client: Client = clients[who]
        responses = await client.responses(line)
        if responses and isinstance(responses[0], r.Continuation):  # IDLE: wait briefly, then DONE
            responses = responses[1:] + await client.session.idle_wait(0) + await client.session.idle_done()
        label = line.decode(errors="replace") if isinstance(line, bytes) else line
        assert isinstance(responses[-1], r.Tagged), (label, responses)
        assert responses[-1].code != r.Code("SERVERBUG"), (label, responses)
        if label.startswith("SELECT"):
            exists = next(x for x in responses if isinstance(x, r.Exists))
            models[who].count = exists.count
            continue
        models[who].apply(responses, label)
    account = Account(1, USER)
    for client, model in zip(clients, models, strict=True):
        model.apply(await client.responses("NOOP"), "NOOP")
        view = client.session.view
        assert view is not None
        stored = await storage.list_messages(account, view.mailbox_id)
        assert view.uids == [m.uid for m in stored]
        assert {uid: meta.flags for uid, meta in view.metas.items()} == {m.uid: m.flags for m in stored}
        assert model.count == len(stored)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command(), max_size=25))
def test_two_sessions_stay_coherent(commands):
    asyncio.run(_run(commands))
