"""The SMTP client against the scriptable loopback sink: one connection per batch, the reply of each
stage deciding each recipient, STARTTLS, AUTH, hop fallback, broken connections."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.support.dnsserver import ZoneServer
from tests.support.sink import DROP, SmtpSink
from whymail.config import RelayConfig
from whymail.dnsresolve import DnsResolver
from whymail.outbound.client import deliver, parse_reply
from whymail.outbound.models import DeliveryAttempt, OutboundMessage, RecipientResult

DOMAIN = "example.test"


def body(n: int, extra: bytes = b"") -> bytes:
    return (
        f"From: alice@src.test\r\nTo: bob@{DOMAIN}\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@src.test>\r\n\r\n".encode()
        + b"Hello.\r\n.A line that starts with a dot.\r\n"
        + extra
    )


def message(n: int, *recipients: str, sender: str = "alice@src.test", extra: bytes = b"") -> OutboundMessage:
    return OutboundMessage(
        id=n, sender=sender, recipients=list(recipients or [f"bob@{DOMAIN}"]), body=body(n, extra)
    )


def mx_zone(zone: ZoneServer, *hosts: tuple[int, str, str]) -> None:
    """MX records for DOMAIN: (preference, host, address)."""
    records = [f"{DOMAIN}. 300 IN MX {pref} {host}." for pref, host, _ in hosts]
    records += [f"{host}. 300 IN A {address}" for _, host, address in hosts]
    zone.set_zone("\n".join(records))


@pytest.fixture
def mx(zone: ZoneServer) -> ZoneServer:
    mx_zone(zone, (10, f"mx.{DOMAIN}", "127.0.0.1"))
    return zone


async def send(
    messages: list[OutboundMessage],
    resolver: DnsResolver,
    relay: RelayConfig,
    *,
    timeout: float = 5.0,
    **kwargs,
) -> dict:
    return await deliver(DOMAIN, messages, resolver=resolver, relay=relay, helo="out.src.test", timeout=timeout, **kwargs)


def statuses(results: list[RecipientResult]) -> dict[str, str]:
    return {r.recipient: r.status for r in results}


# --- one connection, many transactions ---------------------------------------------------------


async def test_several_messages_share_one_connection(mx, resolver, sink: SmtpSink) -> None:
    messages = [message(n) for n in range(3)] + [message(3, sender="")]
    results = await send(messages, resolver, RelayConfig(mx_port=sink.port))

    assert sink.connections == 1
    assert list(results) == [0, 1, 2, 3]
    for n in range(4):
        (result,) = results[n]
        assert (result.status, result.code, result.enhanced) == ("delivered", 250, "2.0.0")
        assert result.remote_host == f"mx.{DOMAIN}"
    received = sink.messages
    assert [m.data for m in received] == [m.body for m in messages]
    assert [m.mail_from for m in received] == ["alice@src.test"] * 3 + [""]  # MAIL FROM:<>
    assert all(m.rcpt_tos == [f"bob@{DOMAIN}"] and m.helo == "out.src.test" for m in received)
    verbs = sink.verbs()
    assert verbs.count("EHLO") == 1 and "RSET" not in verbs and verbs[-1] == "QUIT"


async def test_each_recipient_gets_its_own_rcpt_reply(mx, resolver, sink: SmtpSink) -> None:
    sink.script("RCPT", "550 5.1.1 <nobody@example.test>: user unknown", match="nobody@")
    sink.script("RCPT", "452 4.2.2 mailbox full", match="full@")
    results = await send(
        [message(1, f"bob@{DOMAIN}", f"nobody@{DOMAIN}", f"full@{DOMAIN}", f"bob@{DOMAIN}")],
        resolver, RelayConfig(mx_port=sink.port),
    )
    by_rcpt = {r.recipient: r for r in results[1]}
    assert list(by_rcpt) == [f"bob@{DOMAIN}", f"nobody@{DOMAIN}", f"full@{DOMAIN}"]  # duplicates sent once
    assert by_rcpt[f"bob@{DOMAIN}"].status == "delivered"
    nobody = by_rcpt[f"nobody@{DOMAIN}"]
    assert (nobody.status, nobody.code, nobody.enhanced) == ("failed", 550, "5.1.1")
    assert nobody.text == "<nobody@example.test>: user unknown"
    full = by_rcpt[f"full@{DOMAIN}"]
    assert (full.status, full.code, full.enhanced, full.text) == ("deferred", 452, "4.2.2", "mailbox full")
    assert [m.rcpt_tos for m in sink.messages] == [[f"bob@{DOMAIN}"]]


@pytest.mark.parametrize(("reply", "status"), [("550 5.7.1 sender rejected", "failed"), ("451 4.7.1 greylisted", "deferred")])
async def test_mail_from_reply_decides_every_recipient(mx, resolver, sink: SmtpSink, reply: str, status: str) -> None:
    sink.script("MAIL", reply, times=1)
    results = await send(
        [message(1, f"a@{DOMAIN}", f"b@{DOMAIN}"), message(2)], resolver, RelayConfig(mx_port=sink.port)
    )
    code, _, text = reply.split(" ", 2)
    assert [(r.status, r.code, r.text) for r in results[1]] == [(status, int(code), text)] * 2
    assert statuses(results[2]) == {f"bob@{DOMAIN}": "delivered"}  # same connection goes on
    assert sink.connections == 1 and len(sink.messages) == 1


@pytest.mark.parametrize(("reply", "status"), [("554 5.6.0 content rejected", "failed"), ("451 4.3.0 try later", "deferred")])
async def test_data_reply_applies_to_all_accepted_recipients(
    mx, resolver, sink: SmtpSink, reply: str, status: str
) -> None:
    sink.script("RCPT", "550 5.1.1 unknown", match="x@")
    sink.script("DATA", reply, times=2)
    messages = [message(n, f"a@{DOMAIN}", f"x@{DOMAIN}", f"b@{DOMAIN}") for n in range(3)]
    results = await send(messages, resolver, RelayConfig(mx_port=sink.port))

    code = int(reply[:3])
    for n in (0, 1):
        assert statuses(results[n]) == {f"a@{DOMAIN}": status, f"x@{DOMAIN}": "failed", f"b@{DOMAIN}": status}
        assert {r.code for r in results[n] if r.recipient != f"x@{DOMAIN}"} == {code}
    assert statuses(results[2])[f"a@{DOMAIN}"] == "delivered"
    assert sink.connections == 1
    # After a refused DATA the transaction is reset before the next MAIL (RFC 5321 §4.1.1.5).
    verbs = sink.verbs()
    assert verbs.count("RSET") == 2 and verbs.index("RSET") < verbs.index("MAIL", verbs.index("DATA"))


async def test_no_accepted_recipient_means_no_data_and_a_reset(mx, resolver, sink: SmtpSink) -> None:
    sink.script("RCPT", "550 5.1.1 unknown", match="ghost")
    results = await send(
        [message(1, f"ghost1@{DOMAIN}", f"ghost2@{DOMAIN}"), message(2)], resolver, RelayConfig(mx_port=sink.port)
    )
    assert set(statuses(results[1]).values()) == {"failed"}
    assert statuses(results[2]) == {f"bob@{DOMAIN}": "delivered"}
    assert sink.verbs()[:8] == ["EHLO", "MAIL", "RCPT", "RCPT", "RSET", "MAIL", "RCPT", "DATA"]


async def test_message_larger_than_advertised_size_fails_without_sending(mx, resolver) -> None:
    with SmtpSink(size_limit=2000) as sink:
        big = message(1, extra=b"x" * 3000 + b"\r\n")
        small = message(2)
        results = await send([big, small], resolver, RelayConfig(mx_port=sink.port))
        (result,) = results[1]
        assert (result.status, result.code, result.enhanced) == ("failed", 552, "5.3.4")
        assert "exceeds size limit 2000" in result.text
        assert statuses(results[2]) == {f"bob@{DOMAIN}": "delivered"}
        assert sink.verbs().count("MAIL") == 1  # the big one never started a transaction
        assert sink.messages[0].mail_options == [f"SIZE={len(small.body)}"]  # RFC 1870 §6


async def test_eight_bit_body_is_declared_when_8bitmime_is_offered(mx, resolver, sink: SmtpSink) -> None:
    results = await send([message(1, extra="Grüße\r\n".encode())], resolver, RelayConfig(mx_port=sink.port))
    assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"}
    assert "BODY=8BITMIME" in sink.messages[0].mail_options
    assert sink.messages[0].data.endswith("Grüße\r\n".encode())


async def test_helo_when_ehlo_is_not_understood(mx, resolver, sink: SmtpSink) -> None:
    sink.script("EHLO", "502 5.5.1 EHLO not implemented")
    results = await send([message(1)], resolver, RelayConfig(mx_port=sink.port))
    assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"}
    assert sink.verbs()[:3] == ["EHLO", "HELO", "MAIL"]


async def test_bad_address_is_refused_locally(mx, resolver, sink: SmtpSink) -> None:
    results = await send([message(1, f"bob@{DOMAIN}", "evil>\r\nRSET@x")], resolver, RelayConfig(mx_port=sink.port))
    by_rcpt = {r.recipient: r for r in results[1]}
    assert by_rcpt["evil>\r\nRSET@x"].status == "failed" and by_rcpt["evil>\r\nRSET@x"].code == 553
    assert by_rcpt[f"bob@{DOMAIN}"].status == "delivered"
    assert sink.verbs().count("RSET") == 0


async def test_non_ascii_addresses_use_smtputf8(mx, resolver, sink: SmtpSink) -> None:
    results = await send([message(1, f"jörg@{DOMAIN}", sender="zoë@src.test")], resolver, RelayConfig(mx_port=sink.port))
    assert statuses(results[1]) == {f"jörg@{DOMAIN}": "delivered"}
    received = sink.messages[0]
    assert "SMTPUTF8" in received.mail_options  # RFC 6531 §3.4
    assert (received.mail_from, received.rcpt_tos) == ("zoë@src.test", [f"jörg@{DOMAIN}"])


async def test_non_ascii_addresses_fail_without_smtputf8(mx, resolver) -> None:
    with SmtpSink(smtputf8=False) as sink:
        results = await send([message(1, f"jörg@{DOMAIN}"), message(2)], resolver, RelayConfig(mx_port=sink.port))
        (result,) = results[1]
        assert (result.status, result.code, result.enhanced) == ("failed", 553, "5.6.7")
        assert statuses(results[2]) == {f"bob@{DOMAIN}": "delivered"}
        assert sink.verbs().count("MAIL") == 1


async def test_empty_batch_does_nothing(zone, resolver, sink: SmtpSink) -> None:
    before = len(zone.queries)
    assert await send([], resolver, RelayConfig(mx_port=sink.port)) == {}
    assert sink.connections == 0 and len(zone.queries) == before


# --- STARTTLS ----------------------------------------------------------------------------------


async def test_opportunistic_starttls_without_certificate_check(mx, resolver, tls_sink: SmtpSink) -> None:
    results = await send([message(1), message(2)], resolver, RelayConfig(mx_port=tls_sink.port))
    assert {r.status for rs in results.values() for r in rs} == {"delivered"}
    assert [m.tls for m in tls_sink.messages] == [True, True]
    assert tls_sink.verbs()[:3] == ["EHLO", "STARTTLS", "EHLO"]  # RFC 3207 §4.2: EHLO again
    assert tls_sink.connections == 1


async def test_failed_opportunistic_handshake_retries_in_clear(mx, resolver, tls_sink: SmtpSink) -> None:
    def strict(verify: bool) -> ssl.SSLContext:
        return ssl.create_default_context()  # always verifies: the sink's self-signed cert fails

    results = await send([message(1)], resolver, RelayConfig(mx_port=tls_sink.port), tls_context_factory=strict)
    assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"}
    assert [m.tls for m in tls_sink.messages] == [False]
    assert tls_sink.connections == 2
    assert tls_sink.verbs().count("STARTTLS") == 1


# --- smarthost: required TLS, certificate check, AUTH --------------------------------------------


def smarthost(sink: SmtpSink, **kwargs) -> RelayConfig:
    return RelayConfig(smarthost=sink.address, **kwargs)


async def test_smarthost_requiring_starttls_defers_when_not_offered(zone, resolver, sink: SmtpSink) -> None:
    results = await send([message(1, f"a@{DOMAIN}", f"b@{DOMAIN}")], resolver, smarthost(sink))
    assert {(r.status, r.code, r.enhanced) for r in results[1]} == {("deferred", 451, "4.7.4")}
    assert "STARTTLS" in results[1][0].text and f"[127.0.0.1]:{sink.port}" in results[1][0].text
    assert "MAIL" not in sink.verbs() and sink.messages == []


async def test_smarthost_starttls_with_verified_certificate(zone, resolver, tls_sink: SmtpSink) -> None:
    results = await send(
        [message(1)], resolver, smarthost(tls_sink), tls_context_factory=tls_sink.client_tls_context
    )
    assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"}
    assert results[1][0].remote_host == "127.0.0.1"
    assert tls_sink.messages[0].tls


async def test_smarthost_with_untrusted_certificate_defers(zone, resolver, tls_sink: SmtpSink) -> None:
    results = await send([message(1)], resolver, smarthost(tls_sink))  # system trust store only
    (result,) = results[1]
    assert (result.status, result.enhanced) == ("deferred", "4.7.5")
    assert "TLS handshake" in result.text
    assert tls_sink.messages == [] and tls_sink.connections == 1  # no retry in clear text


async def test_smarthost_without_verification_accepts_self_signed(zone, resolver, tls_sink: SmtpSink) -> None:
    results = await send([message(1)], resolver, smarthost(tls_sink, verify_tls=False))
    assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"} and tls_sink.messages[0].tls


async def test_smarthost_implicit_tls(zone, resolver) -> None:
    with SmtpSink(implicit_tls=True) as sink:
        relay = smarthost(sink, implicit_tls=True)
        results = await send([message(1)], resolver, relay, tls_context_factory=sink.client_tls_context)
        assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"}
        assert sink.messages[0].tls and "STARTTLS" not in sink.verbs()


@pytest.fixture
def auth_sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=True, users={"relayuser": "s3cret"}) as server:
        yield server


async def test_smarthost_auth(zone, resolver, auth_sink: SmtpSink) -> None:
    relay = smarthost(auth_sink, username="relayuser", password="s3cret")
    results = await send([message(1), message(2)], resolver, relay, tls_context_factory=auth_sink.client_tls_context)
    assert {r.status for rs in results.values() for r in rs} == {"delivered"}
    assert [(m.login, m.tls) for m in auth_sink.messages] == [("relayuser", True)] * 2
    verbs = auth_sink.verbs()
    assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")  # no password in clear


async def test_smarthost_auth_failure_defers_everything(zone, resolver, auth_sink: SmtpSink) -> None:
    relay = smarthost(auth_sink, username="relayuser", password="wrong")
    results = await send(
        [message(1, f"a@{DOMAIN}", f"b@{DOMAIN}"), message(2)], resolver, relay,
        tls_context_factory=auth_sink.client_tls_context,
    )
    flat = [r for rs in results.values() for r in rs]
    assert len(flat) == 3 and {r.status for r in flat} == {"deferred"}
    assert all("authentication" in r.text and "535" in r.text for r in flat)
    assert auth_sink.messages == [] and "MAIL" not in auth_sink.verbs()


async def test_auth_is_never_sent_to_mx_hosts(mx, resolver, auth_sink: SmtpSink) -> None:
    relay = RelayConfig(mx_port=auth_sink.port, username="relayuser", password="s3cret")
    results = await send([message(1)], resolver, relay)
    assert "AUTH" not in auth_sink.verbs()
    (result,) = results[1]
    assert result.status == "failed" and result.code == 530  # the sink insists on AUTH


# --- hops, greetings and broken connections ----------------------------------------------------


async def test_first_mx_down_second_mx_used(zone, resolver, sink: SmtpSink) -> None:
    # Nothing listens on 127.0.0.2 at the sink's port: the better MX refuses the connection.
    mx_zone(zone, (10, f"mx1.{DOMAIN}", "127.0.0.2"), (20, f"mx2.{DOMAIN}", "127.0.0.1"))
    results = await send([message(1), message(2)], resolver, RelayConfig(mx_port=sink.port))
    assert {r.remote_host for rs in results.values() for r in rs} == {f"mx2.{DOMAIN}"}
    assert {r.status for rs in results.values() for r in rs} == {"delivered"}
    assert sink.connections == 1


async def test_no_hop_reachable_defers_with_the_connection_error(mx, resolver) -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    results = await send([message(1)], resolver, RelayConfig(mx_port=port))
    (result,) = results[1]
    assert (result.status, result.code, result.remote_host) == ("deferred", 451, "")
    assert result.text.startswith(f"connection to mx.{DOMAIN}[127.0.0.1]:{port} failed:")


async def test_silent_server_times_out_and_defers(mx, resolver) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never says anything
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        results = await send([message(1)], resolver, RelayConfig(mx_port=silent.getsockname()[1]), timeout=0.5)
    (result,) = results[1]
    assert result.status == "deferred" and "mx.example.test[127.0.0.1]" in result.text


async def test_greeting_4xx_defers(mx, resolver, sink: SmtpSink) -> None:
    sink.script("CONNECT", "421 4.3.2 service shutting down")
    results = await send([message(1)], resolver, RelayConfig(mx_port=sink.port))
    (result,) = results[1]
    assert (result.status, result.code, result.enhanced) == ("deferred", 421, "4.3.2")
    assert "service shutting down" in result.text


async def test_greeting_5xx_from_the_last_hop_fails(mx, resolver, sink: SmtpSink) -> None:
    sink.script("CONNECT", "554 5.7.1 no mail from you")
    results = await send([message(1)], resolver, RelayConfig(mx_port=sink.port))
    (result,) = results[1]
    assert (result.status, result.code, result.enhanced) == ("failed", 554, "5.7.1")
    assert result.remote_host == f"mx.{DOMAIN}" and "no mail from you" in result.text


async def test_greeting_5xx_from_an_earlier_hop_moves_on(zone, resolver) -> None:
    with SmtpSink() as first, SmtpSink() as second:
        first.script("CONNECT", "554 5.3.2 not accepting mail right now")
        relay = RelayConfig(smarthost=first.address, smarthost_fallback=second.address, starttls=False)
        results = await send([message(1)], resolver, relay)
        assert statuses(results[1]) == {f"bob@{DOMAIN}": "delivered"}
        assert first.messages == [] and len(second.messages) == 1


async def test_connection_dropped_after_data_defers_and_reconnects_for_the_rest(mx, resolver, sink: SmtpSink) -> None:
    sink.script("DATA", DROP, times=1)
    results = await send([message(n, f"a@{DOMAIN}", f"b@{DOMAIN}") for n in range(3)], resolver, RelayConfig(mx_port=sink.port))
    assert {r.status for r in results[0]} == {"deferred"}
    text = results[0][0].text
    assert text.startswith(f"lost connection with mx.{DOMAIN}[127.0.0.1]:{sink.port} while sending end of data")
    assert {r.status for n in (1, 2) for r in results[n]} == {"delivered"}
    assert sink.connections == 2
    assert [m.data for m in sink.messages] == [body(1), body(2)]


async def test_connection_dropped_at_rcpt_keeps_final_answers(mx, resolver, sink: SmtpSink) -> None:
    sink.script("RCPT", "550 5.1.1 unknown", match="gone@")
    sink.script("RCPT", DROP, match="drop@", times=1)
    results = await send([message(1, f"gone@{DOMAIN}", f"drop@{DOMAIN}", f"c@{DOMAIN}")], resolver, RelayConfig(mx_port=sink.port))
    assert statuses(results[1]) == {f"gone@{DOMAIN}": "failed", f"drop@{DOMAIN}": "deferred", f"c@{DOMAIN}": "deferred"}
    assert "while sending RCPT TO" in {r.recipient: r for r in results[1]}[f"c@{DOMAIN}"].text


async def test_421_mid_session_defers_that_message_and_reconnects(mx, resolver, sink: SmtpSink) -> None:
    sink.script("MAIL", "421 4.7.0 too many messages in this session", times=1, match="second@")
    messages = [message(1), message(2, sender="second@src.test"), message(3)]
    results = await send(messages, resolver, RelayConfig(mx_port=sink.port))
    assert [statuses(results[n])[f"bob@{DOMAIN}"] for n in (1, 2, 3)] == ["delivered", "deferred", "delivered"]
    assert results[2][0].code == 421
    assert sink.connections == 2


async def test_no_route_settles_every_recipient_without_connecting(zone, resolver, sink: SmtpSink) -> None:
    zone.set_zone(f"{DOMAIN}. 300 IN MX 0 .")
    results = await send([message(1, f"a@{DOMAIN}", f"b@{DOMAIN}"), message(2)], resolver, RelayConfig(mx_port=sink.port))
    flat = [r for rs in results.values() for r in rs]
    assert {(r.status, r.code, r.enhanced, r.remote_host) for r in flat} == {("failed", 556, "5.1.10", "")}
    assert sink.connections == 0


# --- results, callbacks and logs ------------------------------------------------------------------


async def test_on_message_is_awaited_after_each_answered_message(mx, resolver, sink: SmtpSink) -> None:
    seen: list[tuple[int, int]] = []

    async def record(message_id, results) -> None:
        seen.append((message_id, len(sink.messages)))  # the server already has that message

    await send([message(1), message(2)], resolver, RelayConfig(mx_port=sink.port), on_message=record)
    assert seen == [(1, 1), (2, 2)]


async def test_one_log_line_per_message(mx, resolver, sink: SmtpSink, caplog: pytest.LogCaptureFixture) -> None:
    sink.script("RCPT", "550 5.1.1 unknown", match="x@")
    with caplog.at_level(logging.INFO, logger="whymail.outbound"):
        await send([message(1, f"a@{DOMAIN}", f"x@{DOMAIN}"), message(2)], resolver, RelayConfig(mx_port=sink.port))
    lines = [r.getMessage() for r in caplog.records if r.name == "whymail.outbound"]
    assert len(lines) == 2
    assert f"relay=mx.{DOMAIN}[127.0.0.1]:{sink.port}" in lines[0]
    assert f"to=<a@{DOMAIN}> status=sent (250 2.0.0" in lines[0]
    assert f"to=<x@{DOMAIN}> status=bounced (550 5.1.1 unknown)" in lines[0]


def test_delivery_attempt_view() -> None:
    results = {7: [
        RecipientResult(recipient="a@x", status="delivered", code=250, enhanced="2.0.0", text="ok"),
        RecipientResult(recipient="b@x", status="deferred", code=451, enhanced="4.3.0", text="later"),
    ]}
    (attempt,) = DeliveryAttempt.from_results("x", results)
    assert attempt.message_id == 7 and not attempt.is_final
    assert [r.recipient for r in attempt.deferred] == ["b@x"] and attempt.delivered[0].reply == "250 2.0.0 ok"


def test_parse_reply_enhanced_codes() -> None:
    reply = parse_reply(550, "5.1.1 no such user\n5.1.1 really")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "no such user really")
    plain = parse_reply(451, "try later")
    assert (plain.enhanced, plain.text) == ("4.0.0", "try later")
    mismatched = parse_reply(250, "5.0.0 odd")  # an enhanced code of another class is not believed
    assert mismatched.enhanced == "2.0.0"
