"""Deliveries split by owning shard (rendezvous hashing) and batched per shard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from whymail.sharding import rendezvous_owner
from whymail.store.batcher import SendBatch, ShardBatcher
from whymail.store.models import DeliveryItem, DeliveryOutcome


class ShardRouter:
    """One `ShardBatcher` per shard; `deliver` answers one outcome per item, in the items' order."""

    def __init__(
        self,
        shard_names: list[str],
        send_for: Callable[[str], SendBatch],
        *,
        on_usage: Callable[[dict[int, int]], None] | None = None,
        max_in_flight: int = 1,
        first_attempt: int = 0,
    ) -> None:
        self.shard_names = list(shard_names)
        self.batchers = {
            name: ShardBatcher(
                send_for(name), on_usage=on_usage, max_in_flight=max_in_flight, first_attempt=first_attempt
            )
            for name in self.shard_names
        }

    async def deliver(self, body: bytes, items: list[DeliveryItem]) -> list[DeliveryOutcome]:
        by_shard: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_shard.setdefault(rendezvous_owner(item.recipient.user_id, self.shard_names), []).append(index)
        shards = list(by_shard)
        results = await asyncio.gather(
            *(self.batchers[shard].submit(body, [items[i] for i in by_shard[shard]]) for shard in shards)
        )
        outcomes: list[DeliveryOutcome | None] = [None] * len(items)
        for shard, shard_outcomes in zip(shards, results, strict=True):
            for index, outcome in zip(by_shard[shard], shard_outcomes, strict=True):
                outcomes[index] = outcome
        return [o for o in outcomes if o is not None]
