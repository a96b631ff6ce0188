"""Outgoing messages built from the webmail form."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from whymail.mime.compose import ComposeError, Outgoing, OutgoingAttachment, build_message
from whymail.mime.view import find_leaf, message_view, part_bytes


def _parse(data: bytes):
    return message_from_bytes(data, policy=policy.default)


def test_text_only_message_has_the_headers_and_crlf_lines():
    built = build_message(Outgoing(from_addr="ann@a.test", from_name="Ann Örn", to=("bob@b.test",),
                                   subject="Grüße", text="hello\nthere\n"),
                          now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), message_id="<m1@a.test>")
    assert built.data.isascii() and b"\n" not in built.data.replace(b"\r\n", b"")
    msg = _parse(built.data)
    assert msg["Message-ID"] == "<m1@a.test>" and msg["Subject"] == "Grüße"
    assert msg["From"].addresses[0].display_name == "Ann Örn" and msg["From"].addresses[0].addr_spec == "ann@a.test"
    assert msg["Date"].datetime == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert msg.get_content_type() == "text/plain" and msg.get_content().replace("\r\n", "\n") == "hello\nthere\n"
    assert built.recipients == ["bob@b.test"]


def test_bcc_is_a_recipient_but_never_a_header():
    built = build_message(Outgoing(from_addr="ann@a.test", to=("bob@b.test",), cc=("cy@c.test",),
                                   bcc=("secret@d.test", "BOB@b.test"), subject="s", text="t"))
    assert b"secret@d.test" not in built.data and b"Bcc" not in built.data
    assert built.recipients == ["bob@b.test", "cy@c.test", "secret@d.test"]


def test_html_alternative_and_attachments_nest_in_mixed():
    payload = bytes(range(256)) * 4
    built = build_message(Outgoing(
        from_addr="ann@a.test", to=("bob@b.test",), subject="s", text="plain", html="<p>rich</p>",
        attachments=(OutgoingAttachment("résumé.pdf", "application/pdf", payload),),
    ))
    msg = _parse(built.data)
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attachment = msg.get_payload()
    assert [p.get_content_type() for p in alternative.get_payload()] == ["text/plain", "text/html"]
    assert attachment.get_filename() == "résumé.pdf" and attachment.get_content() == payload
    shown = message_view(built.data)
    assert shown.text.strip() == "plain" and shown.html.strip() == "<p>rich</p>"
    [info] = shown.attachments
    assert (info.filename, info.content_type, info.size) == ("résumé.pdf", "application/pdf", len(payload))
    assert part_bytes(built.data, find_leaf(built.data, info.part)) == payload


def test_reply_headers_end_with_the_parent():
    built = build_message(Outgoing(from_addr="ann@a.test", to=("bob@b.test",), subject="Re: x", text="t",
                                   in_reply_to="<p2@b.test>", references=("<p1@b.test>",)))
    msg = _parse(built.data)
    assert msg["In-Reply-To"] == "<p2@b.test>" and msg["References"] == "<p1@b.test> <p2@b.test>"


@pytest.mark.parametrize("bad", [
    Outgoing(from_addr="ann@a.test", to=(), subject="s", text="t"),
    Outgoing(from_addr="ann@a.test", to=("not an address",), subject="s", text="t"),
    Outgoing(from_addr="ann@a.test", to=("bob@b.test",), subject="s\r\nBcc: evil@x.test", text="t"),
    Outgoing(from_addr="ann@a.test", from_name="A\nB", to=("bob@b.test",), subject="s", text="t"),
    Outgoing(from_addr="ann@a.test", to=("bob@b.test",), subject="s", text="t", in_reply_to="no-brackets"),
    Outgoing(from_addr="ann@a.test", to=("bob@b.test",), subject="s", text="t",
             attachments=(OutgoingAttachment("a", "bad type\r\nX: y", b"x"),)),
])
def test_bad_input_is_refused(bad: Outgoing):
    with pytest.raises(ComposeError):
        build_message(bad)
