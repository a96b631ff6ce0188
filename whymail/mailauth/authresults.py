"""The Authentication-Results header field (RFC 8601): writing ours, removing forged ones."""

from __future__ import annotations

import re

from whymail.mailauth.dkim import DkimResult
from whymail.mailauth.dmarc import DmarcResult
from whymail.mailauth.spf import SpfResult

HEADER_NAME = b"Authentication-Results"

# RFC 2045 §5.1 token characters: a value made only of these needs no quoting.
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_DOT_ATOM_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def _value(text: str) -> str:
    """An RFC 8601 `value`: a token, or a quoted-string with \\ and \" escaped."""
    if _TOKEN.match(text):
        return text
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    escaped = cleaned.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _comment(text: str) -> str:
    cleaned = "".join(ch for ch in text if ch.isprintable() and ch not in "()\\")
    return f"({cleaned})"


def _reason(reason: str) -> str:
    return f" reason={_value(reason[:200])}" if reason else ""


def spf_resinfo(spf: SpfResult) -> str:
    """`spf=<result> smtp.mailfrom=...` or, for a null MAIL FROM, `smtp.helo=...` (RFC 8601 §2.7.2)."""
    if spf.scope == "helo":
        prop = f"smtp.helo={_value(spf.domain)}" if spf.domain else ""
    else:
        local, at, domain = spf.identity.rpartition("@")
        # pvalue = [[local-part] "@"] domain-name: keep the address when its local part is a plain
        # dot-atom; otherwise the domain alone says what was checked.
        address = spf.identity if at and _DOT_ATOM_LOCAL.match(local) else domain
        prop = f"smtp.mailfrom={address}" if address else ""
    reason = _reason(spf.explanation) if spf.result in ("permerror", "temperror") else ""
    return " ".join(part for part in (f"spf={spf.result}{reason}", prop) if part)


def dkim_resinfo(dkim: DkimResult) -> str:
    """`dkim=<result> header.d=... header.s=... header.b=...` (RFC 8601 §2.7.1, RFC 6008)."""
    parts = [f"dkim={dkim.result}"]
    if dkim.result not in ("pass", "none") and dkim.reason:
        parts[0] += _reason(dkim.reason)
    if dkim.domain:
        parts.append(f"header.d={_value(dkim.domain)}")
    if dkim.selector:
        parts.append(f"header.s={_value(dkim.selector)}")
    if dkim.header_b:
        parts.append(f"header.b={_value(dkim.header_b)}")
    return " ".join(parts)


def dmarc_resinfo(dmarc: DmarcResult) -> str:
    """`dmarc=<result> (p=... dis=...) header.from=...` (RFC 7489 §11.2)."""
    parts = [f"dmarc={dmarc.result}"]
    if dmarc.record is not None:
        parts.append(_comment(f"p={dmarc.policy} dis={dmarc.disposition}"))
    if dmarc.result in ("temperror", "permerror") and dmarc.reason:
        parts[0] += _reason(dmarc.reason)
    if dmarc.from_domain:
        parts.append(f"header.from={_value(dmarc.from_domain)}")
    return " ".join(parts)


def render_header(authserv_id: str, resinfos: list[str]) -> bytes:
    """The complete header field, one result per folded line, ending in CRLF; `none` when no method
    produced a result (RFC 8601 §2.2 no-result)."""
    if not _TOKEN.match(authserv_id):
        raise ValueError(f"authserv-id {authserv_id!r} is not a token (use the host name)")
    body = ";\r\n\t".join([authserv_id, *resinfos]) if resinfos else f"{authserv_id}; none"
    return HEADER_NAME + b": " + body.encode("utf-8") + b"\r\n"


# --- forged headers -------------------------------------------------------------------------------


def _skip_cfws(text: str) -> str:
    """Drop leading whitespace and (nested) comments (RFC 5322 §3.2.2)."""
    while True:
        text = text.lstrip()
        if not text.startswith("("):
            return text
        depth = 0
        for i, ch in enumerate(text):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    text = text[i + 1 :]
                    break
        else:
            return ""


def authserv_id_of(value: str) -> str:
    """The authserv-id at the start of an Authentication-Results value (token or quoted-string)."""
    text = _skip_cfws(value)
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        return re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""
    match = re.match(r"[^\s;()]+", text)
    return match.group(0) if match else ""


def strip_forged_results(message: bytes, authserv_id: str) -> bytes:
    """`message` without the Authentication-Results fields that claim our authserv-id: a sender
    outside our trust boundary must not be able to forge our verdicts (RFC 8601 §5). Other
    fields, the order of the rest, and the body are kept byte for byte."""
    ours = authserv_id.lower()
    lines = message.splitlines(keepends=True)
    kept: list[bytes] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line in (b"\r\n", b"\n"):  # end of the header section
            kept.extend(lines[index:])
            break
        field = [line]
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            field.append(lines[index])
            index += 1
        name, colon, rest = b"".join(field).partition(b":")
        is_ours = (
            colon
            and name.strip().lower() == HEADER_NAME.lower()
            and authserv_id_of(rest.decode("utf-8", "replace")).lower() == ours
        )
        if not is_ours:
            kept.extend(field)
    return b"".join(kept)
