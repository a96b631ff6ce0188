"""Canonical domain names and addresses: what the directory accepts, and the message when it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.directory.addresses import (
    normalize_address,
    normalize_alias_source,
    normalize_domain,
    normalize_local_part,
)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("localhost", "localhost"),
        ("mail-1.sub.example.co.uk", "mail-1.sub.example.co.uk"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ],
)
def test_domain_canonical_form(written: str, canonical: str) -> None:
    assert normalize_domain(written) == canonical


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..b", "empty label"),
        ("-a.com", "hyphen"),
        ("a-.com", "hyphen"),
        ("under_score.com", "letters, digits"),
        ("sp ace.com", "letters, digits"),
        ("192.0.2.1", "numeric"),
        ("[192.0.2.1]", "literal"),
        ("a" * 64 + ".com", "longer than 63"),
        (("a" * 60 + ".") * 5 + "com", "longer than 253"),
        ("xn--zz.com", "A-label"),
        ("☃.net", "invalid domain"),
    ],
)
def test_domain_refused_with_a_reason(written: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_domain(written)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("Alice", "alice"),
        ("first.last", "first.last"),
        ("user+tag", "user+tag"),
        ("o'brien", "o'brien"),
        ("ÜSER", "üser"),
        ("u\u0308ser", "üser"),  # NFC
        ("用户", "用户"),
    ],
)
def test_local_part_canonical_form(written: str, canonical: str) -> None:
    assert normalize_local_part(written) == canonical


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "empty"),
        (".alice", "dot"),
        ("alice.", "dot"),
        ("al..ice", "dot"),
        ("a b", "not allowed"),
        ("a,b", "not allowed"),
        ("a\tb", "not allowed"),
        ("a\u200bb", "not allowed"),  # zero-width space (format character)
        ('"john doe"', "quoted"),
        ("x" * 65, "64 bytes"),
        ("é" * 33, "64 bytes"),
    ],
)
def test_local_part_refused_with_a_reason(written: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_local_part(written)


def test_address_canonical_form() -> None:
    assert normalize_address(" Alice@Bücher.Example ") == "alice@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "written", ["alice", "alice@", "@example.com", "a@b@example.com", "alice@@example.com"]
)
def test_address_refused(written: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(written)


def test_alias_source_is_an_address_or_a_catch_all() -> None:
    assert normalize_alias_source("Info@Example.com") == ("info@example.com", "example.com")
    assert normalize_alias_source("@Example.COM") == ("@example.com", "example.com")
    with pytest.raises(ValueError):
        normalize_alias_source("@")


@given(st.text(max_size=80))
def test_only_value_errors_escape(text: str) -> None:
    for function in (normalize_domain, normalize_local_part, normalize_address, normalize_alias_source):
        try:
            function(text)
        except ValueError:
            pass


@given(st.emails())
def test_canonical_form_is_stable(address: str) -> None:
    once = normalize_address(address)
    assert normalize_address(once) == once
