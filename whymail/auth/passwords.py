"""Password hashing with bcrypt, and the password policy.

bcrypt only looks at the first 72 bytes of a password (the `bcrypt` package refuses longer input).
So that a long passphrase counts in full, a password longer than 72 UTF-8 bytes is first reduced to
base64(sha256(password)), 44 ASCII bytes, and that string is what bcrypt hashes. Base64 keeps NUL
bytes out of the bcrypt input. `hash_password` and `verify_password` apply the same rule, so a hash
is always checked the way it was made; passwords of at most 72 bytes are hashed unchanged, which
keeps hashes made by other bcrypt tools (htpasswd, doveadm pw -s BLF-CRYPT) verifiable.
"""

from __future__ import annotations

import base64
import hashlib

import bcrypt

BCRYPT_MAX_BYTES = 72
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def _bcrypt_input(password: str) -> bytes:
    """The bytes bcrypt sees for `password`: the password itself, or its sha256 when too long."""
    raw = password.encode("utf-8")
    if len(raw) > BCRYPT_MAX_BYTES:
        return base64.b64encode(hashlib.sha256(raw).digest())
    return raw


def hash_password(password: str, rounds: int = 12) -> str:
    """A bcrypt hash (`$2b$<rounds>$...`) of `password`; ValueError if `rounds` is outside 4..31."""
    return bcrypt.hashpw(_bcrypt_input(password), bcrypt.gensalt(rounds)).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """True when `password` matches the bcrypt hash; False for a wrong password or malformed hash."""
    if not isinstance(password, str) or not isinstance(hashed, str):
        return False
    try:
        candidate = _bcrypt_input(password)
        return bcrypt.checkpw(candidate, hashed.encode("ascii"))
    except (ValueError, UnicodeError):
        # Not a bcrypt hash (bad prefix, salt or cost), non-ASCII garbage, or lone surrogates.
        return False


def check_password_policy(password: str) -> None:
    """Raise ValueError with a readable reason when `password` is not acceptable for a new password."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password is too short: at least {MIN_PASSWORD_CHARS} characters are required")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password is too long: at most {MAX_PASSWORD_CHARS} characters are allowed")
    if password.strip() == "":
        raise ValueError("password must not consist only of whitespace")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("password contains characters that are not valid Unicode") from None
