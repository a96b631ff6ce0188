"""Validation and sanitisation of the tokens that go on the IMAP wire (RFC 3501 §9 ABNF).

Used by the response models on construction so that the encoder can never emit invalid syntax.
"""

from __future__ import annotations

import re

ATOM_SPECIALS = frozenset('(){ %*"\\]')
MAX_NUMBER = 2**32 - 1  # RFC 3501 §9 number
MAX_MODSEQ = 2**63 - 1  # RFC 7162 §7 mod-sequence-value
SET_RE = re.compile(r"(?:[1-9]\d*|\*)(?::(?:[1-9]\d*|\*))?(?:,(?:[1-9]\d*|\*)(?::(?:[1-9]\d*|\*))?)*", re.ASCII)


def is_atom(text: str, *, allow_bracket: bool = False) -> bool:
    """True if `text` is a non-empty IMAP atom (ASTRING-CHARs when `allow_bracket`)."""
    if not text:
        return False
    for ch in text:
        o = ord(ch)
        if o <= 0x20 or o >= 0x7F or (ch in ATOM_SPECIALS and not (allow_bracket and ch == "]")):
            return False
    return True


def check_atom(text: str, what: str) -> str:
    """`text` if it is an atom, else ValueError naming `what`."""
    if not isinstance(text, str) or not is_atom(text):
        raise ValueError(f"invalid {what}: {text!r}")
    return text


def check_flag(flag: str, *, allow_wildcard: bool = False) -> str:
    """Validate a flag: `\\Atom` or `atom` (RFC 3501 §9 flag), or `\\*` in PERMANENTFLAGS."""
    if allow_wildcard and flag == "\\*":
        return flag
    check_atom(flag[1:] if flag.startswith("\\") else flag, "flag")
    return flag


def check_number(value: int, what: str, *, minimum: int = 0, maximum: int = MAX_NUMBER) -> int:
    """`value` if it is an int (not bool) within [minimum, maximum], else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def check_seq_set(text: str, what: str, *, allow_star: bool = False) -> str:
    """`text` if it is a sequence-set of nz-numbers (and `*` when allowed), else ValueError."""
    if not isinstance(text, str) or not SET_RE.fullmatch(text) or (not allow_star and "*" in text):
        raise ValueError(f"invalid {what}: {text!r}")
    return text


def wire_str(value: str | bytes, what: str) -> str:
    """Canonical form of a string sent as an IMAP string: what decoding its UTF-8 octets gives back.

    Octets that are not UTF-8 travel as surrogate escapes, so raw 8-bit data survives; a lone
    surrogate that has no octet form is rejected.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        raise ValueError(f"invalid {what}: {value!r}")
    if value.isascii():
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid {what}: {value!r}") from exc


def check_string(name: str, what: str = "mailbox name") -> str:
    """Canonical `wire_str` of a string that must not contain NUL (mailbox names, astrings)."""
    name = wire_str(name, what)
    if "\x00" in name:
        raise ValueError(f"invalid {what}: {name!r}")  # NUL fits neither quoted strings nor literals
    return name


def clean_text(text: str) -> str:
    """Make `text` a run of TEXT-CHARs: CR/LF/NUL become spaces, non-ASCII becomes "?"."""
    if text.isascii() and "\r" not in text and "\n" not in text and "\x00" not in text:
        return text
    return "".join(" " if ch in "\r\n\x00" else ch if ord(ch) < 0x80 else "?" for ch in text)


def set_field(obj: object, name: str, value: object) -> None:
    """Normalise a field of a frozen dataclass from its __post_init__."""
    object.__setattr__(obj, name, value)
