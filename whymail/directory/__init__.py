"""The directory: domains, users and aliases (service functions) and recipient resolution (snapshot)."""

from whymail.directory.service import (
    AlreadyExists,
    Conflict,
    DirectoryError,
    InvalidInput,
    NotFound,
)
from whymail.directory.snapshot import DirectorySnapshot, LocalUser, Resolution, load_snapshot

__all__ = [
    "AlreadyExists",
    "Conflict",
    "DirectoryError",
    "DirectorySnapshot",
    "InvalidInput",
    "LocalUser",
    "NotFound",
    "Resolution",
    "load_snapshot",
]
