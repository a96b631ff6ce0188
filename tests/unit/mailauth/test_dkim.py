"""DKIM keys, signing and verification, cross-checked with dkimpy's own verifier over loopback DNS."""

from __future__ import annotations

import base64
import re

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.dnsserver import ZoneServer
from whymail.dnsresolve import DnsResolver
from whymail.mailauth.dkim import dns_txt_record, generate_key, sign, verify

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly figures\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <q1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Received: from somewhere by here\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the figures are attached.\r\n"
)

KEYS = {algorithm: generate_key(algorithm) for algorithm in ("rsa", "ed25519")}


def publish(zone: ZoneServer, algorithm: str, selector: str = "sel", domain: str = "example.test") -> None:
    zone.add(dns_txt_record(selector, domain, algorithm, KEYS[algorithm][1]))


def signed(
    algorithm: str, message: bytes = MESSAGE, domain: str = "example.test", selector: str = "sel"
) -> bytes:
    return (
        sign(message, domain=domain, selector=selector, private_pem=KEYS[algorithm][0], algorithm=algorithm)
        + message
    )


def dkimpy_verify(message: bytes, resolver: DnsResolver) -> bool:
    """dkimpy's verifier, its key lookups answered by the loopback server."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        texts = resolver.txt_sync(name.decode().rstrip("."))
        return texts[0].encode() if texts else None

    return dkimpy.verify(message, dnsfunc=lookup)


# --- keys -----------------------------------------------------------------------------------------


def test_rsa_key_is_pkcs1_pem_and_spki_public() -> None:
    private_pem, public_b64 = generate_key("rsa", bits=1024)
    assert private_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    public = serialization.load_der_public_key(base64.b64decode(public_b64))
    assert public.key_size == 1024


def test_ed25519_public_key_is_the_raw_32_bytes() -> None:
    private_pem, public_b64 = KEYS["ed25519"]
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert len(base64.b64decode(public_b64)) == 32  # RFC 8463 §4.2


def test_short_rsa_keys_and_unknown_algorithms_are_refused() -> None:
    with pytest.raises(ValueError, match="RFC 8301"):
        generate_key("rsa", bits=512)
    with pytest.raises(ValueError):
        generate_key("dsa")


def test_txt_record_splits_long_values_into_255_char_strings() -> None:
    _, public_b64 = generate_key("rsa", bits=4096)
    line = dns_txt_record("s2024", "Example.TEST", "rsa", public_b64)
    assert line.startswith("s2024._domainkey.example.test. IN TXT ")
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) >= 3
    assert all(len(s) <= 255 for s in strings)
    assert "".join(strings) == f"v=DKIM1; k=rsa; p={public_b64}"


# --- signing --------------------------------------------------------------------------------------


def test_signature_is_relaxed_and_oversigns_from() -> None:
    header = sign(MESSAGE, domain="example.test", selector="sel", private_pem=KEYS["rsa"][0], algorithm="rsa")
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    tags = dkimpy.util.parse_tag_value(header.split(b":", 1)[1])
    assert tags[b"c"] == b"relaxed/relaxed"
    assert (tags[b"d"], tags[b"s"], tags[b"a"]) == (b"example.test", b"sel", b"rsa-sha256")
    signed_names = [h.strip() for h in tags[b"h"].split(b":")]
    assert signed_names.count(b"from") == 2
    assert b"received" not in signed_names
    assert {b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"} <= set(signed_names)


def test_message_without_from_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="From"):
        sign(b"To: x@example.net\r\n\r\nbody\r\n", domain="d.test", selector="s", private_pem=KEYS["rsa"][0])


def test_key_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValueError, match="ed25519"):
        sign(MESSAGE, domain="d.test", selector="s", private_pem=KEYS["rsa"][0], algorithm="ed25519")


# --- verification ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_round_trip_passes_with_ours_and_dkimpy(
    zone: ZoneServer, resolver: DnsResolver, algorithm: str
) -> None:
    publish(zone, algorithm)
    message = signed(algorithm)
    (result,) = await verify(message, resolver)
    assert (result.result, result.domain, result.selector) == ("pass", "example.test", "sel")
    assert result.algorithm == ("rsa-sha256" if algorithm == "rsa" else "ed25519-sha256")
    b_tag = dkimpy.util.parse_tag_value(message.split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1])[b"b"]
    assert result.header_b == re.sub(rb"\s+", b"", b_tag)[:8].decode()
    assert dkimpy_verify(message, resolver) is True


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_tampered_body_fails(zone: ZoneServer, resolver: DnsResolver, algorithm: str) -> None:
    publish(zone, algorithm)
    message = signed(algorithm).replace(b"the figures", b"THE figures")
    (result,) = await verify(message, resolver)
    assert result.result == "fail"
    assert "body hash" in result.reason
    assert dkimpy_verify(message, resolver) is False


async def test_tampered_subject_fails(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "rsa")
    message = signed("rsa").replace(b"Quarterly figures", b"Urgent: wire money")
    (result,) = await verify(message, resolver)
    assert result.result == "fail"


async def test_relaxed_canonicalization_survives_whitespace_changes(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    publish(zone, "rsa")
    message = signed("rsa").replace(b"Subject: Quarterly figures", b"subject:   Quarterly   figures")
    message = message.replace(b"the figures are attached.\r\n", b"the figures  are attached.   \r\n\r\n\r\n")
    assert (await verify(message, resolver))[0].result == "pass"


async def test_an_added_second_from_breaks_the_oversigned_signature(
    zone: ZoneServer, resolver: DnsResolver
) -> None:
    publish(zone, "rsa")
    message = signed("rsa").replace(b"To: Bob", b"From: ceo@example.test\r\nTo: Bob")
    assert (await verify(message, resolver))[0].result == "fail"


async def test_unsigned_message_gives_one_none(resolver: DnsResolver) -> None:
    results = await verify(MESSAGE, resolver)
    assert [r.result for r in results] == ["none"]


async def test_missing_key_is_permerror(zone: ZoneServer, resolver: DnsResolver) -> None:
    (result,) = await verify(signed("rsa"), resolver)
    assert result.result == "permerror"
    assert "no key" in result.reason


async def test_revoked_key_is_permerror(zone: ZoneServer, resolver: DnsResolver) -> None:
    zone.add('sel._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p="')
    (result,) = await verify(signed("rsa"), resolver)
    assert result.result == "permerror"
    assert "revoked" in result.reason


async def test_key_of_another_algorithm_is_permerror(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "ed25519")  # the DNS holds the Ed25519 key, the signature is RSA
    (result,) = await verify(signed("rsa"), resolver)
    assert result.result == "permerror"
    assert "does not match" in result.reason


async def test_ed25519_signature_of_the_wrong_length_fails(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "ed25519")
    header = sign(
        MESSAGE, domain="example.test", selector="sel", private_pem=KEYS["ed25519"][0], algorithm="ed25519"
    )
    forged, count = re.subn(
        rb";\s*b=[A-Za-z0-9+/=\s]+\Z", b"; b=" + base64.b64encode(b"x" * 48) + b"\r\n", header
    )
    assert count == 1
    (result,) = await verify(forged + MESSAGE, resolver)
    assert result.result == "fail"
    assert "64 bytes" in result.reason


async def test_key_lookup_servfail_is_temperror(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "rsa")
    zone.set_servfail("sel._domainkey.example.test")
    (result,) = await verify(signed("rsa"), resolver)
    assert result.result == "temperror"


async def test_key_lookup_timeout_is_temperror(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "rsa")
    zone.set_timeout("sel._domainkey.example.test")
    (result,) = await verify(signed("rsa"), resolver)
    assert result.result == "temperror"


async def test_signature_with_a_missing_tag_is_neutral(resolver: DnsResolver) -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=sel; h=from; b=AAAA\r\n" + MESSAGE
    (result,) = await verify(message, resolver)
    assert result.result == "neutral"
    assert "bh" in result.reason


async def test_i_tag_without_at_sign_is_neutral_not_a_crash(zone: ZoneServer, resolver: DnsResolver) -> None:
    # Found by mutation fuzzing: dkimpy raised IndexError for i= equal to d= without "@".
    publish(zone, "rsa")
    message = signed("rsa").replace(b"i=@example.test", b"i=example.test", 1)
    (result,) = await verify(message, resolver)
    assert result.result == "neutral"
    assert "malformed" in result.reason


async def test_each_signature_gets_its_own_result(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "rsa", selector="a")
    publish(zone, "ed25519", selector="b", domain="relay.example.net")
    once = signed("rsa", selector="a")
    twice = signed("ed25519", message=once, domain="relay.example.net", selector="b")
    third = sign(twice, domain="gone.example.org", selector="c", private_pem=KEYS["rsa"][0]) + twice
    results = await verify(third, resolver)
    assert [(r.result, r.domain, r.selector) for r in results] == [
        ("permerror", "gone.example.org", "c"),
        ("pass", "relay.example.net", "b"),
        ("pass", "example.test", "a"),
    ]


async def test_lf_only_message_verifies(zone: ZoneServer, resolver: DnsResolver) -> None:
    publish(zone, "ed25519")
    message = signed("ed25519").replace(b"\r\n", b"\n")
    assert (await verify(message, resolver))[0].result == "pass"
