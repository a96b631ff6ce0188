"""Which MailboxShard owns a user: rendezvous (highest-random-weight) hashing over shard names.

Adding or removing one shard moves only the users whose highest-weight shard changed (~1/N of them).
"""

from __future__ import annotations

import hashlib


def shard_name(index: int) -> str:
    """The Ray actor name of shard `index`."""
    return f"mailbox-shard-{index}"


def _weight(user_key: str, shard: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{user_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(user_key: str | int, shards: list[str] | tuple[str, ...]) -> str:
    """The shard (from `shards`) that owns `user_key`; stable for a given set of shard names."""
    if not shards:
        raise ValueError("no shards to choose from")
    key = str(user_key)
    return max(shards, key=lambda shard: (_weight(key, shard), shard))
