"""Password hashing (bcrypt, with the sha256 pre-hash beyond 72 bytes) and the password policy."""

from __future__ import annotations

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.auth.passwords import check_password_policy, hash_password, verify_password

FAST = 4  # the lowest bcrypt cost: the tests check behaviour, not strength


def test_hash_is_bcrypt_with_the_requested_cost() -> None:
    hashed = hash_password("correct horse", rounds=FAST)
    assert hashed.startswith("$2b$04$")
    assert len(hashed) == 60


def test_default_cost_is_12() -> None:
    assert hash_password("correct horse").startswith("$2b$12$")


def test_right_password_verifies_and_wrong_one_does_not() -> None:
    hashed = hash_password("correct horse", rounds=FAST)
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsE", hashed)
    assert not verify_password("", hashed)


def test_same_password_hashes_differently_each_time() -> None:
    assert hash_password("correct horse", rounds=FAST) != hash_password("correct horse", rounds=FAST)


def test_non_ascii_password_round_trips() -> None:
    hashed = hash_password("pässwörd-密码", rounds=FAST)
    assert verify_password("pässwörd-密码", hashed)
    assert not verify_password("passwort-密码", hashed)


def test_bytes_beyond_72_still_count() -> None:
    """Plain bcrypt would accept any password sharing the first 72 bytes; the pre-hash prevents it."""
    base = "x" * 72
    hashed = hash_password(base + "tail-one", rounds=FAST)
    assert verify_password(base + "tail-one", hashed)
    assert not verify_password(base + "tail-two", hashed)
    assert not verify_password(base, hashed)


def test_72_byte_password_is_hashed_unchanged_and_73_is_prehashed() -> None:
    exactly = "é" * 36  # 72 UTF-8 bytes
    assert bcrypt.checkpw(exactly.encode(), hash_password(exactly, rounds=FAST).encode())
    longer = exactly + "a"
    hashed = hash_password(longer, rounds=FAST)
    assert verify_password(longer, hashed)
    assert not bcrypt.checkpw(longer.encode()[:72], hashed.encode())


def test_hashes_from_other_bcrypt_tools_verify() -> None:
    foreign = bcrypt.hashpw(b"from-htpasswd", bcrypt.gensalt(FAST)).decode()
    assert verify_password("from-htpasswd", foreign)
    assert verify_password("from-htpasswd", foreign.replace("$2b$", "$2y$", 1))


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "plain",
        "$2b$",
        "$2b$04$",
        "$2b$99$" + "a" * 53,
        "$1$abc$def",
        "{SHA}xyz",
        "$2b$04$ümlaut" + "a" * 46,
    ],
)
def test_malformed_hash_is_false_not_an_error(hashed: str) -> None:
    assert verify_password("anything", hashed) is False


def test_truncated_hash_is_false() -> None:
    hashed = hash_password("correct horse", rounds=FAST)
    assert verify_password("correct horse", hashed[:-1]) is False


def test_non_string_arguments_are_false() -> None:
    assert verify_password(None, "$2b$04$x") is False  # type: ignore[arg-type]
    assert verify_password("x", None) is False  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(password=st.text(max_size=200), hashed=st.text(max_size=80))
def test_verify_never_raises(password: str, hashed: str) -> None:
    assert verify_password(password, hashed) in (True, False)


def test_invalid_cost_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        hash_password("correct horse", rounds=3)


@pytest.mark.parametrize("password", ["12345678", "correct horse battery staple", " spaced ", "x" * 1024])
def test_policy_accepts(password: str) -> None:
    check_password_policy(password)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "too short"),
        ("1234567", "too short"),
        ("x" * 1025, "too long"),
        (" " * 8, "whitespace"),
        ("\t\n \u00a0\u2003   ", "whitespace"),
        ("abcdefg\ud800", "not valid Unicode"),
    ],
)
def test_policy_refuses_with_a_reason(password: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_password_policy(password)


def test_policy_counts_characters_not_bytes() -> None:
    check_password_policy("密码密码密码密码")  # 8 characters, 24 bytes
    with pytest.raises(ValueError, match="too short"):
        check_password_policy("密码密码密码密")
