"""Publishing and routing: what reaches which subscription, intact and exactly once."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tidings.brokers import Delivery, Message
from tidings.errors import UnknownSubscription, UnknownTopic

from ._support import (
    BrokerFactory,
    assert_nothing_arrives,
    assert_same_ids,
    expect_exactly,
    ids,
    msg,
    msgs,
    sub,
    take,
    topology,
)


async def test_published_message_arrives_with_body_and_headers_intact(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work")))
    headers = {"correlation-id": "c-1", "note": "ünïcødé ✓", "empty": ""}
    sent = [
        Message(
            id="binary",
            event_type="Created",
            key="entity-1",
            body=bytes(range(256)) * 4,
            headers=headers,
        ),
        Message(id="empty-body", event_type="Updated", key="", body=b"", headers={}),
        Message(id="large", event_type="Created", key="entity-2", body=b"\x00x" * 512 * 1024),
    ]
    expected = {m.id: (m.event_type, m.key, m.body, dict(m.headers)) for m in sent}
    await broker.publish("orders", sent)
    headers["correlation-id"] = "changed after publish"

    async with broker.consume("work") as consumer:
        got = await take(consumer, 3)
        for delivery in got:
            message = delivery.message
            assert (message.event_type, message.key, message.body, dict(message.headers)) == (
                expected[message.id]
            )
            assert isinstance(message.body, bytes)
            assert (delivery.topic, delivery.subscription, delivery.attempt) == (
                "orders",
                "work",
                1,
            )
            await delivery.ack()
        await assert_nothing_arrives(consumer, backend.quiet)
    assert_same_ids(ids(got), list(expected))
    assert (await broker.depth("work")).pending == 0


async def test_every_subscription_gets_its_own_copy_of_each_message(
    backend: BrokerFactory,
) -> None:
    names = [f"fan-{i}" for i in range(5)]
    broker = await backend(topology(*(sub(n) for n in names)))
    sent = msgs("m", 50)
    await broker.publish("orders", sent)

    for name in names:
        await expect_exactly(broker, name, ids(sent), quiet=backend.quiet)


async def test_event_type_filter_keeps_other_types_out(backend: BrokerFactory) -> None:
    broker = await backend(
        topology(sub("created-only", event_types=("Created",)), sub("everything"))
    )
    sent = [
        msg(f"{event_type}-{i}", event_type=event_type)
        for i in range(10)
        for event_type in ("Created", "Updated", "Deleted")
    ]
    await broker.publish("orders", sent)

    created = [m.id for m in sent if m.event_type == "Created"]
    await expect_exactly(broker, "created-only", created, quiet=backend.quiet)
    await expect_exactly(broker, "everything", ids(sent), quiet=backend.quiet)


async def test_messages_reach_only_subscriptions_bound_to_their_topic(
    backend: BrokerFactory,
) -> None:
    broker = await backend(
        topology(
            sub("orders-only", topics=("orders",)),
            sub("people-only", topics=("people",)),
            sub("both", topics=("orders", "people")),
        )
    )
    orders, people = msgs("order", 20), msgs("person", 20)
    await broker.publish("orders", orders)
    await broker.publish("people", people)

    await expect_exactly(broker, "orders-only", ids(orders), quiet=backend.quiet)
    await expect_exactly(broker, "people-only", ids(people), quiet=backend.quiet)
    got = await expect_exactly(broker, "both", ids(orders + people), quiet=backend.quiet)
    assert {d.message.id: d.topic for d in got} == {
        **{m.id: "orders" for m in orders},
        **{m.id: "people" for m in people},
    }


async def test_subscription_declared_later_gets_only_later_messages(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("early")))
    await broker.publish("orders", [msg("before")])
    await broker.declare(topology(sub("early"), sub("late")))
    await broker.publish("orders", [msg("after")])

    await expect_exactly(broker, "early", ["before", "after"], quiet=backend.quiet)
    await expect_exactly(broker, "late", ["after"], quiet=backend.quiet)


async def test_declaring_again_keeps_messages_and_updates_policy(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work", max_attempts=5)))
    sent = msgs("m", 3)
    await broker.publish("orders", sent)

    await broker.declare(topology(sub("work", max_attempts=5)))
    assert (await broker.depth("work")).ready == 3
    await broker.declare(topology(sub("work", max_attempts=1)))

    async with broker.consume("work", prefetch=1) as consumer:
        [first] = await take(consumer, 1)
        await first.retry(0, "fails once")
    [dead] = await broker.dead_letters("work")
    assert dead.message.id == first.message.id
    assert dead.attempts == 1
    rest = [m.id for m in sent if m.id != first.message.id]
    await expect_exactly(broker, "work", rest, quiet=backend.quiet)


async def test_competing_consumers_each_message_goes_to_exactly_one(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", in_flight=10)))
    sent = msgs("m", 300)
    await broker.publish("orders", sent)
    handles = [broker, await backend(), await backend()]
    received: list[list[Delivery]] = [[], [], []]
    total = len(sent)

    async def work(n: int) -> None:
        async with handles[n].consume("work") as consumer:
            while sum(map(len, received)) < total:
                try:
                    delivery = await asyncio.wait_for(consumer.__anext__(), 0.2)
                except TimeoutError:
                    continue
                received[n].append(delivery)
                await asyncio.sleep(0.001)  # some work, so that the others get a turn
                await delivery.ack()

    async with asyncio.timeout(20):
        await asyncio.gather(*(work(n) for n in range(3)))

    everything = [d for share in received for d in share]
    assert_same_ids(ids(everything), ids(sent))
    assert all(d.attempt == 1 for d in everything)
    assert all(share for share in received), [len(share) for share in received]
    await expect_exactly(broker, "work", [], quiet=backend.quiet)


async def test_ten_thousand_concurrent_publishes_all_arrive_exactly_once(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", in_flight=1000)))
    batches = [msgs(f"b{b}", 100, key=f"k{b % 7}") for b in range(50)]
    singles = msgs("single", 5000)
    await asyncio.gather(
        *(broker.publish("orders", batch) for batch in batches),
        *(broker.publish("orders", [one]) for one in singles),
    )

    everything = [m.id for batch in batches for m in batch] + ids(singles)
    assert len(everything) == 10_000
    await expect_exactly(broker, "work", everything, quiet=backend.quiet, timeout=60)


async def test_unknown_topic_and_subscription_are_refused(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))

    with pytest.raises(UnknownTopic):
        await broker.publish("nowhere", [msg("lost")])
    with pytest.raises(UnknownSubscription):
        async with broker.consume("nobody") as consumer:
            await consumer.__anext__()

    await expect_exactly(broker, "work", [], quiet=backend.quiet)


async def test_settling_a_delivery_twice_raises(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    await broker.publish("orders", msgs("m", 3))

    async with broker.consume("work") as consumer:
        acked, retried, dead = await take(consumer, 3)
        await acked.ack()
        await retried.retry(0, "again")
        await dead.dead_letter("bad")
        for settled in (acked, retried, dead):
            with pytest.raises(RuntimeError):
                await settled.ack()
            with pytest.raises(RuntimeError):
                await settled.retry(0, "again")
            with pytest.raises(RuntimeError):
                await settled.dead_letter("bad")

    assert [d.message.id for d in await broker.dead_letters("work")] == [dead.message.id]
    await expect_exactly(broker, "work", [retried.message.id], quiet=backend.quiet)


async def test_closing_a_consumer_ends_its_iteration(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    consumer = broker.consume("work")
    seen: list[Delivery] = []

    async def iterate() -> None:
        async for delivery in consumer:
            seen.append(delivery)
            await delivery.ack()

    task = asyncio.create_task(iterate())
    await broker.publish("orders", [msg("one")])
    await asyncio.sleep(backend.quiet)
    await consumer.close()
    try:
        await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert ids(seen) == ["one"]
