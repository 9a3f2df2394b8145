"""Durability across closing and reopening the broker (``Capabilities.durable``), and what a
broker close does to deliveries in flight."""

from __future__ import annotations

from collections import Counter

import pytest

from tidings.brokers import Broker

from ._support import BrokerFactory, expect_exactly, ids, msgs, sub, take, topology


async def _durable_broker(backend: BrokerFactory) -> Broker:
    broker = await backend(topology(sub("work"), sub("audit")))
    if not broker.capabilities.durable:
        pytest.skip("backend declares durable=False")
    return broker


async def test_published_messages_and_dead_letters_survive_reopening(
    backend: BrokerFactory,
) -> None:
    broker = await _durable_broker(backend)
    first = msgs("d", 1)
    await broker.publish("orders", first)
    async with broker.consume("work") as consumer:
        [doomed] = await take(consumer, 1)
        await doomed.retry(0, "first failure")
        [doomed] = await take(consumer, 1)
        await doomed.dead_letter("gave up")
    more = msgs("m", 4)
    await broker.publish("orders", more)
    sent = first + more

    broker = await backend.reopen(broker)
    assert (await broker.depth("work")).ready == 4
    [dead] = await broker.dead_letters("work")
    assert (dead.message, dead.reason, dead.attempts) == (doomed.message, "gave up", 2)

    later = msgs("later", 2)
    await broker.publish("orders", later)  # the topology survived too
    rest = [m.id for m in sent if m.id != doomed.message.id]
    await expect_exactly(broker, "work", rest + ids(later), quiet=backend.quiet)
    await expect_exactly(broker, "audit", ids(sent + later), quiet=backend.quiet)
    assert await broker.redrive("work") == 1
    await expect_exactly(broker, "work", [doomed.message.id], quiet=backend.quiet)


async def test_deliveries_in_flight_come_back_after_the_broker_is_closed(
    backend: BrokerFactory,
) -> None:
    broker = await _durable_broker(backend)
    sent = msgs("m", 10)
    await broker.publish("orders", sent)
    consumer = broker.consume("work", prefetch=5)
    held = await take(consumer, 5)

    broker = await backend.reopen(broker)
    got = await expect_exactly(broker, "work", ids(sent), quiet=backend.quiet)
    returned = set(ids(held))
    assert all(d.attempt == (2 if d.message.id in returned else 1) for d in got)
    assert Counter(d.attempt for d in got) == {1: 5, 2: 5}
    await expect_exactly(broker, "audit", ids(sent), quiet=backend.quiet)
