"""Canonical forms of domain names and mail addresses, as the directory stores and looks them up.

- A domain is stored as its lower-case ASCII form: internationalised names are converted to
  A-labels with IDNA 2008 / UTS 46 (`Bücher.example` -> `xn--bcher-kva.example`), so a recipient
  written with either form finds the same row. A trailing dot is dropped; address literals
  (`[192.0.2.1]`) and all-numeric top labels (IP addresses) are refused.
- A local part is a dot-atom (RFC 5321 §4.1.2) whose characters may also be any printable non-ASCII
  character (SMTPUTF8, RFC 6531 §3.3), put in NFC (RFC 6532 §3.1) and lower-cased: the directory is
  case-insensitive. Quoted local parts (`"john doe"@...`) are not accepted for local accounts.

Every function raises ValueError with a message a person can act on.
"""

from __future__ import annotations

import re
import unicodedata

import idna

MAX_DOMAIN_LENGTH = 253  # RFC 1035 §2.3.4, without the trailing dot
MAX_LABEL_LENGTH = 63
MAX_LOCAL_PART_OCTETS = 64  # RFC 5321 §4.5.3.1.1

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
# RFC 5322 §3.2.3 atext, without the dot (dots are checked separately).
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


def normalize_domain(name: str) -> str:
    """The canonical (lower-case A-label) form of a domain name; ValueError if it is not valid."""
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("domain name is empty")
    if text.startswith("["):
        raise ValueError(f"{name!r}: address literals are not accepted, use a domain name")
    if text.isascii():
        ascii_name = text.lower()
    else:
        try:
            ascii_name = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as exc:
            raise ValueError(f"invalid domain name {name!r}: {exc}") from None
    if len(ascii_name) > MAX_DOMAIN_LENGTH:
        raise ValueError(f"invalid domain name {name!r}: longer than {MAX_DOMAIN_LENGTH} characters")
    labels = ascii_name.split(".")
    for label in labels:
        if not label:
            raise ValueError(f"invalid domain name {name!r}: empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise ValueError(f"invalid domain name {name!r}: label longer than {MAX_LABEL_LENGTH} characters")
        if not _LDH_LABEL.match(label):
            raise ValueError(
                f"invalid domain name {name!r}: labels may hold only letters, digits and inner hyphens"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                raise ValueError(f"invalid domain name {name!r}: {label!r} is not a valid A-label") from None
    if labels[-1].isdigit():
        raise ValueError(f"invalid domain name {name!r}: the last label must not be numeric")
    return ascii_name


def _allowed_local_char(char: str) -> bool:
    if char.isascii():
        return char in _ATEXT
    # Printable non-ASCII only: no controls, format characters, surrogates, unassigned or spaces.
    return unicodedata.category(char)[0] not in ("C", "Z")


def normalize_local_part(local: str) -> str:
    """The canonical (NFC, lower-case) form of a local part; ValueError if it is not a valid dot-atom."""
    if not local:
        raise ValueError("local part is empty")
    if local.startswith('"'):
        raise ValueError(f"{local!r}: quoted local parts are not supported")
    text = unicodedata.normalize("NFC", local.lower())
    for char in text:
        if char != "." and not _allowed_local_char(char):
            raise ValueError(f"local part {local!r} contains the character {char!r}, which is not allowed")
    if text.startswith(".") or text.endswith(".") or ".." in text:
        raise ValueError(f"local part {local!r} must not start or end with a dot or hold two dots in a row")
    if len(text.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        raise ValueError(f"local part {local!r} is longer than {MAX_LOCAL_PART_OCTETS} bytes")
    return text


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of `address`, both canonical; ValueError if it is not a valid address."""
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        raise ValueError(f"{address!r} is not a mail address (no @)")
    if not local:
        raise ValueError(f"{address!r} is not a mail address (nothing before the @)")
    if not domain:
        raise ValueError(f"{address!r} is not a mail address (no domain after the @)")
    return normalize_local_part(local), normalize_domain(domain)


def normalize_address(address: str) -> str:
    """The canonical form `local@domain` of `address`; ValueError if it is not a valid address."""
    local, domain = split_address(address)
    return f"{local}@{domain}"


def catch_all_source(domain: str) -> str:
    """The alias source that stands for every otherwise unknown address of `domain`."""
    return f"@{domain}"


def normalize_alias_source(source: str) -> tuple[str, str]:
    """(canonical source, domain) of an alias source: `local@domain`, or `@domain` for a catch-all."""
    text = source.strip()
    if text.startswith("@"):
        domain = normalize_domain(text[1:])
        return catch_all_source(domain), domain
    local, domain = split_address(text)
    return f"{local}@{domain}", domain
