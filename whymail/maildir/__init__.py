"""Maildir++ storage of message bodies, readable by mutt and Dovecot.

`names` maps (domain, local part, IMAP mailbox) to directories and builds idempotent file names;
`writer` delivers batches durably (tmp -> fsync -> rename -> fsync dir) and finds messages again.
"""

from whymail.maildir.names import (
    INBOX,
    MaildirNameError,
    dirname_to_mailbox,
    folder_dir,
    is_inbox,
    mailbox_to_dirname,
    sanitize_hostname,
    unique_name,
    user_dir,
)
from whymail.maildir.writer import (
    MaildirFile,
    ensure_folder,
    find_message,
    read_message,
    remove_files,
    write_files,
    write_files_async,
)

__all__ = [
    "INBOX",
    "MaildirFile",
    "MaildirNameError",
    "dirname_to_mailbox",
    "ensure_folder",
    "find_message",
    "folder_dir",
    "is_inbox",
    "mailbox_to_dirname",
    "read_message",
    "remove_files",
    "sanitize_hostname",
    "unique_name",
    "user_dir",
    "write_files",
    "write_files_async",
]
