"""LIST / LSUB pattern matching and mailbox attributes (RFC 3501 §6.3.8, RFC 6154, RFC 3348, RFC 5258)."""

from __future__ import annotations

import re

from whymail.imap.responses import ListResponse
from whymail.imap.storage import HIERARCHY_DELIMITER, MailboxInfo
from whymail.imap.utf7 import encode_mailbox


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """`*` matches anything, `%` anything but the delimiter; the reference is prefixed as written."""
    full = reference + pattern if not pattern.startswith(HIERARCHY_DELIMITER) or not reference else pattern
    if full.upper().startswith("INBOX") and (len(full) == 5 or full[5] in (HIERARCHY_DELIMITER, "*", "%")):
        full = "INBOX" + full[5:]  # INBOX is case-insensitive (RFC 3501 §5.1)
    body = "".join(
        ".*" if ch == "*" else f"[^{re.escape(HIERARCHY_DELIMITER)}]*" if ch == "%" else re.escape(ch)
        for ch in full
    )
    return re.compile(body, re.DOTALL)


def has_children(name: str, names: set[str]) -> bool:
    prefix = name + HIERARCHY_DELIMITER
    return any(other.startswith(prefix) for other in names)


def mailbox_attributes(box: MailboxInfo, names: set[str], *, subscribed: bool) -> tuple[str, ...]:
    """\\HasChildren or \\HasNoChildren, the special-use attribute, and \\Subscribed when asked."""
    attrs = ["\\HasChildren" if has_children(box.name, names) else "\\HasNoChildren"]
    if box.special_use:
        attrs.append(box.special_use)
    if subscribed and box.subscribed:
        attrs.append("\\Subscribed")
    return tuple(attrs)


def list_responses(
    mailboxes: list[MailboxInfo],
    reference: str,
    patterns: tuple[str, ...],
    *,
    selection: tuple[str, ...] = (),
    returns: tuple[str, ...] = (),
    command: str = "LIST",
) -> tuple[list[ListResponse], list[MailboxInfo]]:
    """The LIST (or LSUB) responses and the mailboxes they name, in storage order."""
    if command == "LIST" and patterns == ("",):
        # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root name.
        return [ListResponse(("\\Noselect",), HIERARCHY_DELIMITER, "")], []
    regexes = [pattern_regex(reference, p) for p in patterns if p]
    names = {box.name for box in mailboxes}
    only_subscribed = command == "LSUB" or "SUBSCRIBED" in selection
    only_special = "SPECIAL-USE" in selection
    show_subscribed = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
    out: list[ListResponse] = []
    matched: list[MailboxInfo] = []
    for box in mailboxes:
        if only_subscribed and not box.subscribed:
            continue
        if only_special and not box.special_use:
            continue
        if not any(r.fullmatch(box.name) for r in regexes):
            continue
        attrs = mailbox_attributes(box, names, subscribed=show_subscribed)
        out.append(ListResponse(attrs, HIERARCHY_DELIMITER, encode_mailbox(box.name), command))  # type: ignore[arg-type]
        matched.append(box)
    if command == "LIST" and not only_subscribed and not only_special:
        out.extend(_implied_parents(names, [r for p, r in zip(patterns, regexes, strict=False) if "%" in p]))
    return out, matched


def _implied_parents(names: set[str], regexes: list[re.Pattern[str]]) -> list[ListResponse]:
    """RFC 3501 §6.3.8: with `%`, a level that exists only as a parent is listed as \\Noselect."""
    parents = {
        HIERARCHY_DELIMITER.join(name.split(HIERARCHY_DELIMITER)[:depth])
        for name in names
        for depth in range(1, name.count(HIERARCHY_DELIMITER) + 1)
    }
    return [
        ListResponse(("\\Noselect", "\\HasChildren"), HIERARCHY_DELIMITER, encode_mailbox(parent))
        for parent in sorted(parents - names)
        if any(r.fullmatch(parent) for r in regexes)
    ]
