"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.imap.utf7 import decode_mailbox, encode_mailbox

no_surrogates = st.text(alphabet=st.characters(blacklist_categories=["Cs"]))


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3 example
        ("Entwürfe", "Entw&APw-rfe"),
        ("a&b", "a&-b"),
        ("&", "&-"),
        ("", ""),
        ("😀", "&2D3eAA-"),
        ("tab\there", "tab&AAk-here"),
    ],
)
def test_known_encodings(name: str, encoded: str) -> None:
    assert encode_mailbox(name) == encoded
    assert decode_mailbox(encoded) == name


@pytest.mark.parametrize(
    "bad",
    [
        "&Jjo",  # shift not closed
        "&AGE-",  # printable ASCII ("a") must not be encoded
        "&U,BTFw-&ZeVnLIqe-",  # two adjacent shifts instead of one
        "&Jjo!-",  # not base64
        "&AGEA-",  # odd number of UTF-16 bytes
        "&2D0-",  # lone high surrogate
        "Entwürfe",  # raw non-ASCII in the encoded form
        "a\x7fb",  # DEL is not printable
        "&A-",  # a single base64 character cannot carry a byte
        "&APx-",  # ü with non-zero padding bits (the canonical form is &APw-)
    ],
)
def test_malformed_input_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_mailbox(bad)


@given(no_surrogates)
def test_round_trip(name: str) -> None:
    encoded = encode_mailbox(name)
    assert all(" " <= ch <= "~" for ch in encoded)
    assert decode_mailbox(encoded) == name


@given(st.text(alphabet=st.sampled_from("&-ABCabc+,09/ü")))
def test_decode_only_raises_value_error(text: str) -> None:
    try:
        decoded = decode_mailbox(text)
    except ValueError:
        return
    assert encode_mailbox(decoded) == text
