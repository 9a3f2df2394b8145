"""Per-key order, where the backend promises it (``Capabilities.per_key_order``)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from typing import Any

import pytest

from tidings.brokers import Broker, Delivery

from ._support import (
    BrokerFactory,
    assert_nothing_arrives,
    assert_same_ids,
    expect_exactly,
    msg,
    sub,
    take,
    topology,
)


async def _ordered_broker(backend: BrokerFactory, **policy: Any) -> Broker:
    broker = await backend(topology(sub("work", **policy)))
    if not broker.capabilities.per_key_order:
        pytest.skip("backend declares per_key_order=False")
    return broker


async def test_same_key_messages_succeed_in_publish_order_despite_retries(
    backend: BrokerFactory,
) -> None:
    broker = await _ordered_broker(backend, max_attempts=10)
    keys = [f"k{i}" for i in range(10)]
    sent = [msg(f"{key}-{n}", key=key) for n in range(30) for key in keys]
    await broker.publish("orders", sent)
    rng = random.Random(20240611)
    acked: dict[str, list[str]] = defaultdict(list)
    unsettled: dict[str, str] = {}
    overlaps: list[str] = []
    all_acked = asyncio.Event()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(delivery: Delivery) -> None:
        key = delivery.message.key
        await asyncio.sleep(rng.random() * 0.003)
        del unsettled[key]
        if delivery.attempt < 3 and rng.random() < 0.3:
            await delivery.retry(rng.choice((0.0, 0.01)), "random failure")
            return
        acked[key].append(delivery.message.id)
        await delivery.ack()
        if sum(map(len, acked.values())) == len(sent):
            all_acked.set()

    async def pump() -> None:
        async with broker.consume("work", prefetch=10) as consumer:
            async for delivery in consumer:
                key = delivery.message.key
                if key in unsettled:
                    overlaps.append(f"{delivery.message.id} while {unsettled[key]} unsettled")
                unsettled[key] = delivery.message.id
                task = asyncio.create_task(handle(delivery))
                handlers.add(task)
                task.add_done_callback(handlers.discard)

    pumping = asyncio.create_task(pump())
    try:
        await asyncio.wait_for(all_acked.wait(), 30)
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        await asyncio.gather(*handlers)

    assert overlaps == []
    for key in keys:
        assert acked[key] == [f"{key}-{n}" for n in range(30)], key
    assert_same_ids([i for done in acked.values() for i in done], [m.id for m in sent])
    await expect_exactly(broker, "work", [], quiet=backend.quiet)
    assert await broker.dead_letters("work") == []


async def test_unsettled_message_holds_back_only_its_own_key_until_dead_lettered(
    backend: BrokerFactory,
) -> None:
    broker = await _ordered_broker(backend)
    await broker.publish("orders", [msg("k1-a", key="k1"), msg("k1-b", key="k1")])
    await broker.publish("orders", [msg("k2-a", key="k2"), msg("free")])

    async with broker.consume("work") as consumer:
        first = await take(consumer, 3)
        assert {d.message.id for d in first} == {"k1-a", "k2-a", "free"}
        await assert_nothing_arrives(consumer, backend.quiet)
        for delivery in first:
            if delivery.message.id == "k1-a":
                await delivery.dead_letter("unusable")
            else:
                await delivery.ack()
        [after] = await take(consumer, 1)
        assert (after.message.id, after.attempt) == ("k1-b", 1)
        await after.ack()
    await expect_exactly(broker, "work", [], quiet=backend.quiet)
