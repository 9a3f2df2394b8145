"""Redelivery: after retry, lease expiry, consumer close and consumer process death; retry
delays; the prefetch bound."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

import tidings.brokers
from tidings.brokers import Delivery

from ._support import (
    BrokerFactory,
    assert_nothing_arrives,
    assert_same_ids,
    expect_exactly,
    ids,
    msg,
    msgs,
    next_within,
    sub,
    take,
    topology,
)

HELPER = Path(__file__).with_name("_consumer_proc.py")


async def test_retried_message_comes_back_with_the_next_attempt(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work", max_attempts=5)))
    await broker.publish("orders", [msg("flaky")])

    async with broker.consume("work") as consumer:
        for attempt in (1, 2, 3):
            [delivery] = await take(consumer, 1)
            assert (delivery.message.id, delivery.attempt) == ("flaky", attempt)
            if attempt < 3:
                await delivery.retry(0, f"failure {attempt}")
        await delivery.ack()
        await assert_nothing_arrives(consumer, backend.quiet)
    assert await broker.dead_letters("work") == []


async def test_unsettled_delivery_comes_back_after_its_lease_expires(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", lease_seconds=0.5)))
    if not broker.capabilities.leases:
        pytest.skip("backend declares leases=False")
    await broker.publish("orders", [msg("slow")])
    loop = asyncio.get_running_loop()

    async with broker.consume("work") as holder, broker.consume("work") as rescuer:
        await take(holder, 1)
        taken_at = loop.time()
        await assert_nothing_arrives(rescuer, 0.3)
        again = await next_within(rescuer, 5)
        assert again is not None, "the delivery did not come back after its lease"
        assert loop.time() - taken_at >= 0.45
        assert (again.message.id, again.attempt) == ("slow", 2)
        await again.ack()
    await expect_exactly(broker, "work", [], quiet=backend.quiet)


async def test_unsettled_deliveries_come_back_when_their_consumer_closes(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work")))
    sent = msgs("m", 10)
    await broker.publish("orders", sent)

    consumer = broker.consume("work", prefetch=5)
    held = await take(consumer, 5)
    await consumer.close()
    await held[0].ack()  # settling after close is allowed (and may be a no-op)

    async with broker.consume("work") as rescuer:
        got = await take(rescuer, 9)
        late = await next_within(rescuer, backend.quiet)
        if late is not None:
            got.append(late)
        for delivery in got:
            await delivery.ack()
        await assert_nothing_arrives(rescuer, backend.quiet)

    # Nine must come back; the one settled after close may come back too, at most once.
    settled_late = held[0].message.id
    assert_same_ids(
        [i for i in ids(got) if i != settled_late], [m.id for m in sent if m.id != settled_late]
    )
    assert ids(got).count(settled_late) <= 1
    returned = {d.message.id for d in held}
    assert all(d.attempt == (2 if d.message.id in returned else 1) for d in got)


async def test_deliveries_come_back_after_the_consumer_process_is_killed(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", lease_seconds=1.0, in_flight=10)))
    if not broker.capabilities.multi_process:
        pytest.skip("backend declares multi_process=False")
    sent = msgs("m", 10)
    await broker.publish("orders", sent)

    src = Path(tidings.brokers.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(HELPER), backend.url, "work", "10",
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        if broker.capabilities.shared_depth:
            assert (await broker.depth("work")).in_flight == 10
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()

    got = await expect_exactly(broker, "work", ids(sent), quiet=backend.quiet, timeout=30)
    assert Counter(d.attempt for d in got) == {2: 10}


async def test_retry_delay_holds_the_message_back_while_others_flow(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work")))
    ordered = broker.capabilities.per_key_order
    loop = asyncio.get_running_loop()
    await broker.publish("orders", [msg("slow", key="k1")])

    async with broker.consume("work") as consumer:
        [slow] = await take(consumer, 1)
        await slow.retry(1.0, "not yet")
        retried_at = loop.time()
        await broker.publish(
            "orders", [msg("same-key", key="k1"), msg("other-key", key="k2"), msg("no-key")]
        )
        first = await take(consumer, 2 if ordered else 3, timeout=2)
        assert loop.time() - retried_at < 0.9, "other messages waited for the retry"
        for delivery in first:
            await delivery.ack()
        expected_first = {"other-key", "no-key"} | (set() if ordered else {"same-key"})
        assert set(ids(first)) == expected_first

        again = await next_within(consumer, 5)
        assert again is not None
        assert (again.message.id, again.attempt) == ("slow", 2)
        assert loop.time() - retried_at >= 0.95, "delivered before its retry delay"
        await again.ack()
        if ordered:
            [same] = await take(consumer, 1)
            assert same.message.id == "same-key"
            await same.ack()
        await assert_nothing_arrives(consumer, backend.quiet)
    assert (await broker.depth("work")).pending == 0


async def test_consumer_never_holds_more_than_its_prefetch(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    sent = msgs("m", 20)
    await broker.publish("orders", sent)
    acked: list[Delivery] = []

    async with broker.consume("work", prefetch=5) as consumer:
        held = await take(consumer, 5)
        await assert_nothing_arrives(consumer, backend.quiet)
        assert (await broker.depth("work")).in_flight == 5
        for delivery in held[:2]:
            await delivery.ack()
        acked += held[:2]
        held = held[2:] + await take(consumer, 2)
        await assert_nothing_arrives(consumer, backend.quiet)
        for delivery in held:
            await delivery.ack()
        acked += held

    rest = [m.id for m in sent if m.id not in set(ids(acked))]
    assert len(rest) == 13
    await expect_exactly(broker, "work", rest, quiet=backend.quiet)


async def test_default_prefetch_is_the_subscription_in_flight_limit(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", in_flight=3)))
    sent = msgs("m", 6)
    await broker.publish("orders", sent)

    async with broker.consume("work") as consumer:
        held = await take(consumer, 3)
        await assert_nothing_arrives(consumer, backend.quiet)
        for delivery in held:
            await delivery.ack()
    rest = [m.id for m in sent if m.id not in set(ids(held))]
    await expect_exactly(broker, "work", rest, quiet=backend.quiet)
