"""The SMTP client against Postfix's smtp-sink: an independent server reads exactly what we sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.smtpsink import PostfixSink
from whymail.config import RelayConfig
from whymail.dnsresolve import DnsResolver
from whymail.outbound.client import deliver
from whymail.outbound.models import OutboundMessage


@pytest.fixture
def postfix_sink() -> Iterator[PostfixSink]:
    with PostfixSink() as sink:
        yield sink


def messages() -> list[OutboundMessage]:
    bodies = [
        b"From: alice@src.test\r\nTo: bob@example.test\r\nSubject: one\r\n\r\nplain text\r\n",
        # A line with a lone dot and lines starting with dots: dot-stuffing must round-trip.
        b"From: alice@src.test\r\nSubject: two\r\n\r\n.\r\n..two dots\r\n.one dot\r\nend\r\n",
        # 8-bit body and a bounce (null sender).
        "From: MAILER-DAEMON@src.test\r\nSubject: drei\r\n\r\nGrüße aus Köln\r\n".encode(),
    ]
    senders = ["alice@src.test", "alice@src.test", ""]
    return [
        OutboundMessage(id=f"m{n}", sender=senders[n], recipients=["bob@example.test", "carol@example.test"], body=b)
        for n, b in enumerate(bodies)
    ]


async def test_messages_arrive_byte_for_byte_over_one_session(postfix_sink: PostfixSink) -> None:
    sent = messages()
    results = await deliver(
        "[127.0.0.1]", sent, resolver=DnsResolver(["127.0.0.1:9"]), relay=RelayConfig(mx_port=postfix_sink.port),
        helo="out.src.test", timeout=5.0,
    )
    assert {r.status for rs in results.values() for r in rs} == {"delivered"}
    assert {r.code for rs in results.values() for r in rs} == {250}

    dumped = postfix_sink.wait_for_messages(3)
    assert postfix_sink.wait_for_sessions(1) == 1
    by_subject = {m.data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]: m for m in dumped}
    assert sorted(by_subject) == [b"drei", b"one", b"two"]
    for message, subject in zip(sent, [b"one", b"two", b"drei"], strict=True):
        got = by_subject[subject]
        assert got.data == message.body
        assert got.mail_from == message.sender
        assert got.rcpt_tos == ["bob@example.test", "carol@example.test"]
        assert got.helo == "out.src.test"


async def test_rejected_recipients_fail_with_the_servers_reply() -> None:
    with PostfixSink(extra_args=["-f", "RCPT"]) as sink:  # every RCPT gets smtp-sink's hard reject
        results = await deliver(
            "[127.0.0.1]", messages()[:1], resolver=DnsResolver(["127.0.0.1:9"]),
            relay=RelayConfig(mx_port=sink.port), helo="out.src.test", timeout=5.0,
        )
        (first, second) = results["m0"]
        assert (first.status, first.code, first.enhanced) == ("failed", 500, "5.3.0")
        assert first.text == "Error: command failed" and second.status == "failed"
        assert sink.counters()[2] == 0  # no message reached it
