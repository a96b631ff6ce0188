"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).

Printable US-ASCII (0x20-0x7e) stands for itself, `&` is written `&-`, and every other run of
characters is UTF-16BE in base64 with `,` instead of `/`, without padding, between `&` and `-`.
"""

from __future__ import annotations

import base64
import binascii
import re

_B64_CHARS = re.compile(rb"^[A-Za-z0-9+,]*$")


def encode_mailbox(name: str) -> str:
    """Encode a mailbox name to modified UTF-7 (raises UnicodeEncodeError on lone surrogates)."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if " " <= ch <= "~":
            if pending:
                out.append(_encode_run("".join(pending)))
                pending.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_encode_run("".join(pending)))
    return "".join(out)


def decode_mailbox(encoded: str) -> str:
    """Decode a modified UTF-7 mailbox name; ValueError unless the input is in canonical form."""
    out: list[str] = []
    i = 0
    while i < len(encoded):
        ch = encoded[i]
        if not " " <= ch <= "~":
            raise ValueError("mailbox name contains a character outside printable US-ASCII")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = encoded.find("-", i + 1)
        if end < 0:
            raise ValueError("'&' shift sequence is not closed with '-'")
        run = encoded[i + 1 : end]
        out.append("&" if not run else _decode_run(run))
        i = end + 1
    decoded = "".join(out)
    # Canonical form only: this rejects adjacent shift sequences, non-zero padding bits and the like.
    if encode_mailbox(decoded) != encoded:
        raise ValueError("mailbox name is not in canonical modified UTF-7")
    return decoded


def _encode_run(run: str) -> str:
    raw = base64.b64encode(run.encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
    return "&" + raw.decode("ascii") + "-"


def _decode_run(run: str) -> str:
    raw = run.encode("ascii")
    if not _B64_CHARS.match(raw) or len(raw) % 4 == 1:
        raise ValueError("invalid modified base64 in mailbox name")
    padded = raw.replace(b",", b"/") + b"=" * (-len(raw) % 4)
    try:
        utf16 = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError("invalid modified base64 in mailbox name") from exc
    if len(utf16) % 2:
        raise ValueError("modified base64 does not decode to whole UTF-16 units")
    text = utf16.decode("utf-16-be")  # UnicodeDecodeError (a ValueError) on unpaired surrogates
    if any(" " <= ch <= "~" for ch in text):
        raise ValueError("printable US-ASCII must not be base64-encoded in a mailbox name")
    return text
