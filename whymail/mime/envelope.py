"""The IMAP ENVELOPE of a message (RFC 3501 §7.4.2): raw header strings and parsed address lists.

Strings are returned as written (unfolded, not RFC 2047-decoded); None stands for NIL.
"""

from __future__ import annotations

from whymail.mime.headers import HeaderField, first_value, split_header

Address = tuple[str | None, str | None, str | None, str | None]  # (name, adl, mailbox, host)
Envelope = tuple  # (date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id)

MISSING_DOMAIN = "MISSING_DOMAIN"  # what Dovecot puts in the host of an address without "@domain"
MAX_ADDRESSES = 10_000
_SPECIALS = "<>@,;:."


def envelope(raw: bytes, start: int = 0, end: int | None = None) -> Envelope:
    """ENVELOPE of the message (or bare header block) at raw[start:end]; never raises."""
    end = len(raw) if end is None else end
    fields, _ = split_header(raw, start, end)
    return envelope_from_fields(raw, fields)


def envelope_from_fields(raw: bytes, fields: tuple[HeaderField, ...]) -> Envelope:
    """ENVELOPE from already located header fields."""

    def value(name: str) -> str | None:
        return first_value(raw, fields, name)

    def addresses(name: str) -> tuple[Address, ...] | None:
        text = value(name)
        return parse_address_list(text) if text else None

    from_ = addresses("from")
    # RFC 3501 §7.4.2: an absent or empty Sender/Reply-To takes the value of From.
    sender = addresses("sender") or from_
    reply_to = addresses("reply-to") or from_
    return (
        value("date"),
        value("subject"),
        from_,
        sender,
        reply_to,
        addresses("to"),
        addresses("cc"),
        addresses("bcc"),
        value("in-reply-to"),
        value("message-id"),
    )


# --- address lists (RFC 5322 §3.4) -----------------------------------------------------------------


def parse_address_list(text: str) -> tuple[Address, ...] | None:
    """Addresses of a From/To/Cc-style value; groups become (NIL NIL name NIL) … (NIL NIL NIL NIL)."""
    tokens = _tokenize(text)
    result: list[Address] = []
    in_group = False
    pos = 0
    while pos < len(tokens) and len(result) < MAX_ADDRESSES:
        words: list[tuple[str, str]] = []
        while pos < len(tokens) and tokens[pos][0] not in "<:,;":
            words.append(tokens[pos])
            pos += 1
        kind = tokens[pos][0] if pos < len(tokens) else ""
        if kind == ":" and not in_group:
            result.append((None, None, _phrase(words) or "", None))
            in_group = True
            pos += 1
        elif kind == "<":
            pos = _angle_address(tokens, pos + 1, _phrase(words), result)
        else:  # ",", ";", ":" inside a group, or the end: words were a bare addr-spec
            if any(kind != "(" for kind, _ in words):
                result.append(_addr_spec(words))
            pos += 1
            if kind == ";" and in_group:
                result.append((None, None, None, None))
                in_group = False
    if in_group:
        result.append((None, None, None, None))
    return tuple(result) or None


def _angle_address(tokens: list[tuple[str, str]], pos: int, name: str | None, out: list[Address]) -> int:
    """Parse `[route:] local@domain >` from tokens[pos]; returns the position after the next separator."""
    inner: list[tuple[str, str]] = []
    while pos < len(tokens) and tokens[pos][0] != ">":
        inner.append(tokens[pos])
        pos += 1
    adl = None
    colons = [i for i, (kind, _) in enumerate(inner) if kind == ":"]
    if colons:  # obsolete source route "@a,@b:" (RFC 5322 §4.4)
        adl = "".join(t for _, t in inner[: colons[-1]]) or None
        inner = inner[colons[-1] + 1 :]
    _, _, mailbox, host = _addr_spec(inner)
    out.append((name or None, adl, mailbox, host))
    # Skip comments and junk up to the separator; a ";" closing a group is left for the caller.
    while pos < len(tokens) and tokens[pos][0] not in ",;":
        pos += 1
    if pos < len(tokens) and tokens[pos][0] == ",":
        pos += 1
    return pos


def _addr_spec(words: list[tuple[str, str]]) -> Address:
    comments = [text for kind, text in words if kind == "("]
    words = [(kind, text) for kind, text in words if kind not in "(<>"]
    at = max((i for i, (kind, _) in enumerate(words) if kind == "@"), default=-1)
    local_words = words if at < 0 else words[:at]
    local = "".join(text if kind != '"' else _quote(text) for kind, text in local_words)
    host = "".join(text for _, text in words[at + 1 :]) if at >= 0 else ""
    name = comments[0].strip() if comments and comments[0].strip() else None
    return (name, None, local or "", host or MISSING_DOMAIN)


def _phrase(words: list[tuple[str, str]]) -> str | None:
    parts = [text for kind, text in words if kind not in "(>"]
    return " ".join(parts).replace(" .", ".").strip() or None


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tokenize(text: str) -> list[tuple[str, str]]:
    """RFC 5322 lexical tokens as (kind, text): kind is a special, '"' (quoted), '(' (comment) or 'a'."""
    tokens: list[tuple[str, str]] = []
    pos, size = 0, len(text)
    while pos < size:
        char = text[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == '"':
            pos, content = _delimited(text, pos + 1, '"', None)
            tokens.append(('"', content))
        elif char == "(":
            pos, content = _delimited(text, pos + 1, ")", "(")
            tokens.append(("(", content))
        elif char == "[":
            close = text.find("]", pos)
            close = size - 1 if close < 0 else close
            tokens.append(("a", text[pos : close + 1]))
            pos = close + 1
        elif char in _SPECIALS:
            tokens.append((char, char))
            pos += 1
        else:
            start = pos
            while pos < size and text[pos] not in _SPECIALS + ' \t\r\n"([':
                pos += 1
            tokens.append(("a", text[start:pos]))
    return tokens


def _delimited(text: str, pos: int, close: str, nest: str | None) -> tuple[int, str]:
    """Content of a quoted string or (nested) comment starting at pos; backslash escapes removed."""
    chars: list[str] = []
    depth = 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
            continue
        if nest is not None and char == nest:
            depth += 1
        elif char == close:
            depth -= 1
            if depth == 0:
                return pos + 1, "".join(chars)
        chars.append(char)
        pos += 1
    return pos, "".join(chars)
