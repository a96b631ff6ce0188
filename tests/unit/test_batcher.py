"""ShardBatcher: one call in flight, batching of what arrives meanwhile, idempotent retries."""

from __future__ import annotations

import asyncio
import time
import uuid

from whymail.store.batcher import ShardBatcher
from whymail.store.models import DeliveryBatch, DeliveryItem, DeliveryOutcome, DeliveryReport, Recipient


def _item(user_id: int = 1) -> DeliveryItem:
    return DeliveryItem(
        delivery_id=uuid.uuid4(), body_index=0,
        recipient=Recipient(user_id=user_id, domain="d.test", local_part=f"u{user_id}"), internal_date=time.time(),
    )


def _ok(batch: DeliveryBatch) -> DeliveryReport:
    return DeliveryReport(
        outcomes=[DeliveryOutcome(delivery_id=i.delivery_id, ok=True, uid=n + 1) for n, i in enumerate(batch.items)],
        usage={1: 123},
    )


async def test_what_arrives_during_a_call_goes_in_the_next_call_together() -> None:
    calls: list[DeliveryBatch] = []
    release = asyncio.Event()

    async def send(batch: DeliveryBatch) -> DeliveryReport:
        calls.append(batch)
        if len(calls) == 1:
            await release.wait()
        return _ok(batch)

    usage: dict[int, int] = {}
    batcher = ShardBatcher(send, on_usage=usage.update)
    first = asyncio.create_task(batcher.submit(b"one", [_item()]))
    while not calls:
        await asyncio.sleep(0)
    later = [asyncio.create_task(batcher.submit(f"m{i}".encode(), [_item(), _item()])) for i in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, *later)
    assert [len(c.items) for c in calls] == [1, 10]
    assert calls[1].bodies == [f"m{i}".encode() for i in range(5)]
    assert [item.body_index for item in calls[1].items] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert all(o.ok for outcomes in results for o in outcomes)
    assert [len(r) for r in results] == [1, 2, 2, 2, 2, 2]
    assert usage == {1: 123}


async def test_a_failed_call_is_retried_with_the_same_delivery_ids_and_a_higher_attempt() -> None:
    seen: list[DeliveryBatch] = []

    async def send(batch: DeliveryBatch) -> DeliveryReport:
        seen.append(batch)
        if len(seen) < 3:
            raise ConnectionError("shard restarting")
        return _ok(batch)

    item = _item()
    outcomes = await ShardBatcher(send, retry_for=10).submit(b"x", [item])
    assert outcomes[0].ok
    assert [b.attempt for b in seen] == [0, 1, 2]
    assert {b.items[0].delivery_id for b in seen} == {item.delivery_id}


async def test_a_shard_that_stays_down_gets_451_after_the_retry_window() -> None:
    async def send(batch: DeliveryBatch) -> DeliveryReport:
        raise ConnectionError("down")

    outcomes = await ShardBatcher(send, retry_for=0.3).submit(b"x", [_item(), _item()])
    assert [(o.ok, o.error_code, o.error_enhanced) for o in outcomes] == [(False, 451, "4.3.0")] * 2


async def test_a_submission_whose_session_is_gone_is_not_sent() -> None:
    sent: list[DeliveryBatch] = []
    release = asyncio.Event()

    async def send(batch: DeliveryBatch) -> DeliveryReport:
        sent.append(batch)
        await release.wait()
        return _ok(batch)

    batcher = ShardBatcher(send)
    first = asyncio.create_task(batcher.submit(b"first", [_item()]))
    while not sent:
        await asyncio.sleep(0)
    abandoned = asyncio.create_task(batcher.submit(b"abandoned", [_item()]))
    kept = asyncio.create_task(batcher.submit(b"kept", [_item()]))
    await asyncio.sleep(0)
    abandoned.cancel()
    release.set()
    await first
    await kept
    assert [b.bodies for b in sent] == [[b"first"], [b"kept"]]


async def test_a_malformed_shard_answer_is_451_never_250() -> None:
    async def send(batch: DeliveryBatch) -> DeliveryReport:
        return DeliveryReport(outcomes=[])  # malformed: fewer outcomes than items

    outcomes = await asyncio.wait_for(ShardBatcher(send).submit(b"x", [_item()]), timeout=5)
    assert [(o.ok, o.error_code) for o in outcomes] == [(False, 451)]
