"""Maildir++ naming: where a user's mailbox lives on disk, and what a message file is called.

Layout (Maildir++, readable by ``mutt -f`` and Dovecot)::

    <root>/<domain>/<local_part>/                 INBOX            (cur/ new/ tmp/)
    <root>/<domain>/<local_part>/.Archive.2024    "Archive/2024"   (cur/ new/ tmp/ maildirfolder)

Mailbox name escaping (our own, simple and reversible): IMAP hierarchy ``/`` becomes ``.``; inside a
hierarchy level a literal ``.`` is written ``%2E`` and a literal ``%`` is written ``%25``, so no
name can collide with the hierarchy or with another name. Every other character (including non-ASCII,
stored as UTF-8) is kept as is. Mailbox names given here are the decoded (Unicode) IMAP names, not the
modified UTF-7 wire form.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

MAX_DOMAIN_LEN = 253
MAX_LOCAL_PART_LEN = 64
MAX_MAILBOX_LEN = 255
# Most filesystems (ext4, xfs, NFS) limit one path component to 255 bytes.
_MAX_COMPONENT_BYTES = 255
INBOX = "INBOX"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAILBOX_FORBIDDEN = re.compile(r"[\x00\r\n]")


class MaildirNameError(ValueError):
    """A domain, local part, mailbox or file name that cannot be mapped safely onto the Maildir tree."""


def _check_component(value: str, what: str, max_len: int) -> None:
    if not isinstance(value, str):
        raise MaildirNameError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise MaildirNameError(f"{what} is empty")
    if len(value) > max_len:
        raise MaildirNameError(f"{what} is longer than {max_len} characters")
    if "/" in value:
        raise MaildirNameError(f"{what} {value!r} contains '/'")
    if _CONTROL.search(value):
        raise MaildirNameError(f"{what} {value!r} contains a control character")
    if value.startswith("."):
        raise MaildirNameError(f"{what} {value!r} starts with '.'")
    _check_encoded_length(value, what)


def _check_encoded_length(value: str, what: str) -> None:
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MaildirNameError(f"{what} {value!r} is not valid Unicode") from exc
    if len(encoded) > _MAX_COMPONENT_BYTES:
        raise MaildirNameError(f"{what} is longer than {_MAX_COMPONENT_BYTES} bytes on disk")


def is_inbox(mailbox: str) -> bool:
    """True for INBOX in any letter case (RFC 3501 §5.1)."""
    return mailbox.upper() == INBOX


def _split_mailbox(mailbox: str) -> list[str]:
    """Validate an IMAP mailbox name and return its hierarchy levels ("INBOX" prefix normalised)."""
    if not isinstance(mailbox, str):
        raise MaildirNameError(f"mailbox name must be a str, not {type(mailbox).__name__}")
    if not mailbox:
        raise MaildirNameError("mailbox name is empty")
    if len(mailbox) > MAX_MAILBOX_LEN:
        raise MaildirNameError(f"mailbox name is longer than {MAX_MAILBOX_LEN} characters")
    if _MAILBOX_FORBIDDEN.search(mailbox):
        raise MaildirNameError(f"mailbox name {mailbox!r} contains NUL, CR or LF")
    if mailbox.startswith("/") or mailbox.endswith("/"):
        raise MaildirNameError(f"mailbox name {mailbox!r} starts or ends with '/'")
    levels = mailbox.split("/")
    for level in levels:
        if not level:
            raise MaildirNameError(f"mailbox name {mailbox!r} has an empty hierarchy level")
        if level.startswith("."):
            raise MaildirNameError(f"mailbox name {mailbox!r} has a level starting with '.'")
    # "inbox/Sub" and "INBOX/Sub" are the same mailbox: INBOX is case-insensitive (RFC 3501 §5.1).
    if is_inbox(levels[0]):
        levels[0] = INBOX
    return levels


def _escape_level(level: str) -> str:
    return level.replace("%", "%25").replace(".", "%2E")


_ESCAPED = re.compile(r"%(25|2[Ee])")


def _unescape_level(level: str) -> str:
    return _ESCAPED.sub(lambda m: "%" if m.group(1) == "25" else ".", level)


def mailbox_to_dirname(mailbox: str) -> str:
    """Maildir++ directory name of an IMAP mailbox: "" for INBOX, ".Archive.2024" for "Archive/2024"."""
    levels = _split_mailbox(mailbox)
    if levels == [INBOX]:
        return ""
    dirname = "." + ".".join(_escape_level(level) for level in levels)
    _check_encoded_length(dirname, "mailbox directory name")
    return dirname


def dirname_to_mailbox(dirname: str) -> str:
    """Inverse of `mailbox_to_dirname`: "" -> "INBOX", ".Archive.2024" -> "Archive/2024"."""
    if dirname == "":
        return INBOX
    if not dirname.startswith(".") or dirname in (".", ".."):
        raise MaildirNameError(f"{dirname!r} is not a Maildir++ folder name")
    levels = dirname[1:].split(".")
    if any(not level for level in levels):
        raise MaildirNameError(f"{dirname!r} has an empty hierarchy level")
    return "/".join(_unescape_level(level) for level in levels)


def user_dir(root: Path, domain: str, local_part: str) -> Path:
    """`<root>/<domain>/<local_part>`; the domain is lower-cased (RFC 5321 §2.4), the local part kept."""
    _check_component(domain, "domain", MAX_DOMAIN_LEN)
    _check_component(local_part, "local part", MAX_LOCAL_PART_LEN)
    return _inside(root, Path(root) / domain.lower() / local_part)


def folder_dir(root: Path, domain: str, local_part: str, mailbox: str) -> Path:
    """Directory of one mailbox: the user directory for INBOX, `<user>/.<Escaped.Name>` otherwise."""
    base = user_dir(root, domain, local_part)
    dirname = mailbox_to_dirname(mailbox)
    return _inside(root, base / dirname) if dirname else base


def _inside(root: Path, path: Path) -> Path:
    # The names are validated above; this also refuses a symlink planted in the tree pointing outside.
    resolved_root = Path(root).resolve()
    if not path.resolve().is_relative_to(resolved_root):
        raise MaildirNameError(f"{path} resolves outside the Maildir root {resolved_root}")
    return path


def check_file_name(name: str) -> None:
    """Refuse a message file name that is not one plain path component."""
    if not isinstance(name, str) or not name:
        raise MaildirNameError("message file name is empty")
    if "/" in name or "\0" in name or name.startswith("."):
        raise MaildirNameError(f"message file name {name!r} is not a plain file name")
    _check_encoded_length(name, "message file name")


def sanitize_hostname(hostname: str) -> str:
    """Hostname part of a Maildir file name: `/` -> `\\057`, `:` -> `\\072` (cr.yp.to/proto/maildir).

    `\\`, `,` and anything not printable ASCII are escaped the same octal way, so the name stays one
    safe path component and `,S=` stays unambiguous.
    """
    out = []
    for ch in hostname or "localhost":
        code = ord(ch)
        if ch in "/:\\," or code < 0x21 or code > 0x7E:
            out.append("".join(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def timestamp_from_uuid(delivery_id: uuid.UUID) -> int | None:
    """Unix seconds embedded in a version 1 or 7 UUID, else None."""
    if delivery_id.version == 7:
        return (delivery_id.int >> 80) // 1000
    if delivery_id.version == 1:
        # 100 ns intervals since 1582-10-15.
        return (delivery_id.time - 0x01B21DD213814000) // 10_000_000
    return None


def unique_name(delivery_id: uuid.UUID, index: int, size: int, hostname: str, ts: int | None = None) -> str:
    """Maildir file name, the same for the same (delivery_id, index) so a retried delivery is idempotent.

    `<ts>.W<delivery hex>_<index>.<host>,S=<size>`; `ts` defaults to the time inside a v1/v7 UUID.
    """
    if ts is None:
        ts = timestamp_from_uuid(delivery_id)
        if ts is None:
            raise ValueError(f"ts is required for a version {delivery_id.version} UUID")
    if ts < 0 or index < 0 or size < 0:
        raise ValueError("ts, index and size must not be negative")
    return f"{ts}.W{delivery_id.hex}_{index}.{sanitize_hostname(hostname)},S={size}"
