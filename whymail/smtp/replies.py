"""SMTP replies with RFC 3463 enhanced status codes.

`SmtpReply` is what the policy functions return or raise; `with_enhanced_code` upgrades the stock
reply lines of aiosmtpd (which mostly lack enhanced codes) so that every reply after EHLO carries one,
as RFC 2034 §3 requires once ENHANCEDSTATUSCODES is advertised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SmtpReply(Exception):
    """One SMTP reply: `code enhanced text`, e.g. 550 5.1.1 "User unknown"."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500


# Stock aiosmtpd replies mapped to what we answer instead (RFC 3463 codes).
_STOCK: dict[str, str] = {
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.6 Line too long (RFC 5321 section 4.5.3.1.6)",
    "500 Error: bad syntax": "500 5.5.2 Syntax error",
    "503 Error: need MAIL command": "503 5.5.1 Need MAIL command first",
    "503 Error: need RCPT command": "503 5.5.1 Need RCPT command first",
    "503 Error: nested MAIL command": "503 5.5.1 Sender already specified",
    "503 Error: send HELO first": "503 5.5.1 Send EHLO/HELO first",
    "500 Error: strict ASCII mode": "500 5.6.7 Non-ASCII data requires SMTPUTF8",
    "421 Too many connections": "421 4.7.0 Too many connections",
    # Sent after EHLO, unlike the 220 greeting, so it needs its enhanced code (RFC 2034 §3).
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
}

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(\s|$)", re.ASCII)
_REPLY_CODE = re.compile(r"^[245]\d\d(?=[ -]|$)", re.ASCII)  # ASCII only: "²".isdigit() is True
_DEFAULT_ENHANCED = {"2": "2.0.0", "3": "", "4": "4.0.0", "5": "5.5.0"}
_BY_CODE = {
    "221": "2.0.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


def with_enhanced_code(line: str) -> str:
    """Return `line` with an enhanced status code, rewriting aiosmtpd's stock texts."""
    if line in _STOCK:
        return _STOCK[line]
    if not _REPLY_CODE.match(line):
        return line  # 354 go-ahead, 334 challenges carry none; anything else is not a reply
    if _HAS_ENHANCED.match(line):
        return line
    code, sep, text = line[:3], line[3:4], line[4:]
    if line.startswith("220"):
        return line
    enhanced = _BY_CODE.get(code) or _DEFAULT_ENHANCED[code[0]]
    text = text.removeprefix("Error: ").removeprefix("Syntax: ") if code[0] != "2" else text
    if code[0] == "5" and line[4:].startswith("Syntax:"):
        text = "Syntax: " + text
    return f"{code}{sep or ' '}{enhanced} {text}".rstrip()
