"""Errors raised by the IMAP command parser.

The text of an `ImapParseError` is meant to be sent to the client after `tag BAD` (or `* BAD` when
the tag is unknown): it is plain ASCII and quotes at most a short, sanitised excerpt of client input.
"""

from __future__ import annotations

_EXCERPT_LEN = 20


class ImapParseError(Exception):
    """A command could not be parsed; `tag` is set when it was read before the error."""

    def __init__(self, text: str, tag: str | None = None, code: str | None = None) -> None:
        super().__init__(text)
        self.text = _ascii_only(text)
        self.tag = tag
        # Optional RFC 5530 response code for the reply, e.g. "TOOBIG" or "BADCHARSET".
        self.code = code

    def with_tag(self, tag: str | None) -> ImapParseError:
        """Return this error with `tag` filled in when it was not known where it was raised."""
        if self.tag is None and tag is not None:
            self.tag = tag
        return self

    def __repr__(self) -> str:
        return f"ImapParseError(text={self.text!r}, tag={self.tag!r}, code={self.code!r})"


def excerpt(data: bytes | str) -> str:
    """A short printable-ASCII rendering of client input for use inside an error text."""
    if isinstance(data, bytes):
        data = data.decode("ascii", errors="replace")
    shown = "".join(ch if " " <= ch <= "~" and ch != '"' else "?" for ch in data[:_EXCERPT_LEN])
    return shown + ("..." if len(data) > _EXCERPT_LEN else "")


def _ascii_only(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


class CommandError(Exception):
    """The session refuses the current command: rendered once as `tag NO|BAD [code] text`.

    `code` is a response-code model from `whymail.imap.responses` (or None).
    """

    def __init__(self, status: str, text: str, code: object = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code
