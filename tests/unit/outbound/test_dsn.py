"""DSNs (RFC 3464 inside an RFC 6522 multipart/report) read back with Python's email parser."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.outbound.dsn import build_dsn, is_bounce, should_bounce
from whymail.outbound.models import RecipientResult

ARRIVAL = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LAST = datetime(2026, 3, 1, 12, 5, 0, tzinfo=UTC)
ORIGINAL = (
    b"From: Alice <alice@src.test>\r\nTo: bob@example.test\r\nSubject: quarterly report\r\n"
    b"Message-ID: <orig-1@src.test>\r\nDate: Sun, 01 Mar 2026 12:00:00 +0000\r\n\r\n"
    b"The numbers are in.\r\n"
)
UNKNOWN = RecipientResult(
    recipient="bob@example.test", status="failed", code=550, enhanced="5.1.1",
    text="<bob@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
    remote_host="mx.example.test",
)
NULL_MX = RecipientResult(
    recipient="carol@nomail.test", status="failed", code=556, enhanced="5.1.10",
    text="domain nomail.test does not accept mail (null MX)", remote_host="",
)


def parse(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def build(**overrides) -> bytes:
    arguments = dict(
        reporting_mta="mail.src.test", original_sender="alice@src.test", original_message=ORIGINAL,
        recipients=[UNKNOWN, NULL_MX], action="failed", arrival_date=ARRIVAL, envid="ENV-42", ret=None,
        postmaster="postmaster@src.test", last_attempt=LAST,
    )
    arguments.update(overrides)
    return build_dsn(**arguments)


def assert_wire_format(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998  # RFC 5322 §2.1.1


def test_failed_dsn_has_every_required_field() -> None:
    raw = build()
    assert_wire_format(raw)
    dsn = parse(raw)
    assert dsn.defects == []
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@mail.src.test>"
    assert [a.addr_spec for a in dsn["To"].addresses] == ["alice@src.test"]
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert email.utils.parsedate_to_datetime(dsn["Date"]) == LAST
    assert dsn["Message-ID"].startswith("<") and dsn["Message-ID"].endswith("@mail.src.test>")
    assert dsn["MIME-Version"] == "1.0"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"

    text, status, returned = dsn.iter_parts()
    assert text.get_content_type() == "text/plain"
    explanation = text.get_content()
    assert "could not" in explanation and "postmaster@src.test" in explanation
    assert "<bob@example.test>: host mx.example.test said: 550 5.1.1" in explanation
    assert "User unknown" in explanation.replace("\n    ", " ")

    assert status.get_content_type() == "message/delivery-status"
    per_message, bob, carol = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.src.test"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVAL
    assert bob["Final-Recipient"] == "rfc822; bob@example.test"
    assert bob["Action"] == "failed" and bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx.example.test"
    assert bob["Diagnostic-Code"] == f"smtp; 550 5.1.1 {UNKNOWN.text}"  # unfolded again by the parser
    assert email.utils.parsedate_to_datetime(bob["Last-Attempt-Date"]) == LAST
    assert bob["Will-Retry-Until"] is None
    # Our own diagnosis, no Remote-MTA: RFC 3464 §2.3.6 reads that as "issued by the Reporting MTA".
    assert carol["Status"] == "5.1.10" and carol["Remote-MTA"] is None
    assert carol["Diagnostic-Code"].startswith("X-WhyMail; domain nomail.test")

    assert returned.get_content_type() == "message/rfc822"
    (inner,) = returned.get_payload()
    assert inner["Message-ID"] == "<orig-1@src.test>" and inner["Subject"] == "quarterly report"
    assert ORIGINAL in raw  # returned unchanged


def test_delayed_dsn() -> None:
    until = ARRIVAL + timedelta(days=5)
    deferred = RecipientResult(
        recipient="bob@example.test", status="deferred", code=451, enhanced="4.4.1",
        text="connection to mx.example.test[192.0.2.1]:25 failed: timed out", remote_host="",
    )
    dsn = parse(build(recipients=[deferred], action="delayed", will_retry_until=until, envid=None))
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    text, status, _ = dsn.iter_parts()
    assert "YOU DO NOT NEED TO RESEND" in text.get_content()
    per_message, bob = status.get_payload()
    assert per_message["Original-Envelope-Id"] is None
    assert bob["Action"] == "delayed" and bob["Status"] == "4.4.1"
    assert email.utils.parsedate_to_datetime(bob["Will-Retry-Until"]) == until


def test_missing_enhanced_code_falls_back_to_the_class() -> None:
    odd = RecipientResult(recipient="x@example.test", status="failed", code=550, enhanced="", text="no", remote_host="mx")
    _, status, _ = parse(build(recipients=[odd])).iter_parts()
    assert status.get_payload()[1]["Status"] == "5.0.0"


def test_ret_hdrs_returns_only_the_header() -> None:
    raw = build(ret="HDRS")
    dsn = parse(raw)
    returned = list(dsn.iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Subject: quarterly report" in raw and b"The numbers are in." not in raw
    assert "Its header is attached below." in list(dsn.iter_parts())[0].get_content()


def test_large_original_returns_only_the_header_even_with_ret_full() -> None:
    big = ORIGINAL + b"x" * 5000 + b"\r\n"
    raw = build(original_message=big, ret="FULL", max_returned_size=4000)
    assert list(parse(raw).iter_parts())[2].get_content_type() == "text/rfc822-headers"
    assert b"x" * 100 not in raw


def test_eight_bit_original_is_returned_as_8bit_and_bare_lf_normalised() -> None:
    original = "Subject: Grüße\n\nÄrger im Büro\n".encode()
    raw = build(original_message=original)
    assert_wire_format(raw)
    dsn = parse(raw)
    assert dsn["Content-Transfer-Encoding"] == "8bit"
    returned = list(dsn.iter_parts())[2]
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert original.replace(b"\n", b"\r\n") in raw


def test_non_ascii_reply_text_is_quoted_printable_in_the_explanation_and_ascii_in_the_fields() -> None:
    result = RecipientResult(
        recipient="bob@example.test", status="failed", code=550, enhanced="5.2.1",
        text="Postfach gesperrt – bitte später", remote_host="mx.example.test",
    )
    raw = build(recipients=[result])
    assert_wire_format(raw)
    text, status, _ = parse(raw).iter_parts()
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert "bitte später" in text.get_content()
    assert status.get_payload()[1]["Diagnostic-Code"] == "smtp; 550 5.2.1 Postfach gesperrt ? bitte sp?ter"


def test_a_dsn_needs_a_recipient() -> None:
    with pytest.raises(ValueError):
        build(recipients=[])


printable = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FFF, blacklist_categories=("Cs",)), max_size=600)


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(printable, min_size=1, max_size=4),
    host=st.sampled_from(["", "mx.example.test"]),
    body=st.binary(max_size=400),
    ret=st.sampled_from([None, "FULL", "HDRS"]),
)
def test_any_reply_text_gives_a_parseable_dsn(texts: list[str], host: str, body: bytes, ret) -> None:
    results = [
        RecipientResult(recipient=f"r{n}@example.test", status="failed", code=550, enhanced="5.0.0", text=t, remote_host=host)
        for n, t in enumerate(texts)
    ]
    raw = build(recipients=results, original_message=b"Subject: s\r\n\r\n" + body, ret=ret)
    assert_wire_format(raw)
    dsn = parse(raw)
    parts = list(dsn.iter_parts())
    assert [p.get_content_type() for p in parts[:2]] == ["text/plain", "message/delivery-status"]
    blocks = parts[1].get_payload()
    assert [b["Final-Recipient"] for b in blocks[1:]] == [f"rfc822; r{n}@example.test" for n in range(len(texts))]
    assert all(b["Action"] == "failed" and b["Status"] == "5.0.0" for b in blocks[1:])


# --- the loop guard ------------------------------------------------------------------------------


def test_null_sender_is_never_bounced() -> None:
    assert is_bounce("")
    assert is_bounce("<>")
    assert not should_bounce("", ORIGINAL)
    assert not should_bounce("", None, action="delayed")


def test_a_dsn_is_never_bounced_even_with_a_sender() -> None:
    dsn = build()
    assert is_bounce("someone@src.test", dsn)
    assert not should_bounce("someone@src.test", parse(dsn))


def test_ordinary_message_is_bounced_per_notify() -> None:
    assert not is_bounce("alice@src.test", ORIGINAL)
    assert should_bounce("alice@src.test", ORIGINAL)
    assert should_bounce("alice@src.test", ORIGINAL, action="delayed")
    assert not should_bounce("alice@src.test", ORIGINAL, notify=["NEVER"])  # RFC 3461 §4.1
    assert not should_bounce("alice@src.test", ORIGINAL, notify=["SUCCESS"])
    assert should_bounce("alice@src.test", ORIGINAL, notify=["success", "failure"])
    assert not should_bounce("alice@src.test", ORIGINAL, action="delayed", notify=["FAILURE"])
    assert should_bounce("alice@src.test", ORIGINAL, action="delayed", notify=["DELAY"])
