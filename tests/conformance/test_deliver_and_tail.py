"""Delivering to one subscription (:meth:`Broker.deliver`) and following a topic live
(:meth:`Broker.tail`)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tidings.brokers import Broker, Message, Tail
from tidings.errors import UnknownSubscription, UnknownTopic

from ._support import (
    BrokerFactory,
    assert_nothing_arrives,
    expect_exactly,
    ids,
    msg,
    msgs,
    sub,
    take,
    topology,
)


async def test_deliver_reaches_only_the_named_subscription_as_first_attempts(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("backfill"), sub("bystander")))
    sent = msgs("old", 20, key="k")

    assert await broker.deliver("backfill", sent, topic="orders") == 20

    got = await expect_exactly(broker, "backfill", ids(sent), quiet=backend.quiet)
    assert {(d.topic, d.subscription, d.attempt) for d in got} == {("orders", "backfill", 1)}
    assert {d.message.id: d.message.body for d in got} == {m.id: m.body for m in sent}
    assert all(dict(d.message.headers) == {"name": d.message.id} for d in got)
    await expect_exactly(broker, "bystander", [], quiet=backend.quiet)


async def test_deliver_skips_what_the_subscription_would_not_receive(
    backend: BrokerFactory,
) -> None:
    broker = await backend(
        topology(sub("created-only", event_types=("Created",)), sub("people-only", ["people"]))
    )
    sent = [msg(f"{t}-{i}", event_type=t) for i in range(5) for t in ("Created", "Updated")]

    assert await broker.deliver("created-only", sent, topic="orders") == 5
    assert await broker.deliver("people-only", sent, topic="orders") == 0

    created = [m.id for m in sent if m.event_type == "Created"]
    await expect_exactly(broker, "created-only", created, quiet=backend.quiet)
    await expect_exactly(broker, "people-only", [], quiet=backend.quiet)


async def test_deliver_to_an_unknown_subscription_raises(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    with pytest.raises(UnknownSubscription):
        await broker.deliver("nobody", [msg("m")], topic="orders")


async def test_delivered_messages_wait_behind_a_pending_message_of_their_key(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work")))
    if not broker.capabilities.per_key_order:
        pytest.skip("backend declares per_key_order=False")
    await broker.publish("orders", [msg("live", key="k")])
    async with broker.consume("work") as consumer:
        (held,) = await take(consumer, 1)
        await broker.deliver("work", msgs("old", 3, key="k") + [msg("free")], topic="orders")
        (other,) = await take(consumer, 1)
        assert other.message.id == "free"
        await other.ack()
        await assert_nothing_arrives(consumer, backend.quiet)
        await held.ack()
        for expected in ("old-0", "old-1", "old-2"):
            (delivery,) = await take(consumer, 1)
            assert delivery.message.id == expected
            await delivery.ack()


async def _gather(tail: Tail, count: int, timeout: float = 10.0) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await tail.__anext__())
    return got


async def test_tail_sees_what_is_published_after_it_opened_and_takes_nothing_away(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", event_types=("Created",))))
    await broker.publish("orders", [msg("before")])
    sent = [
        Message(id="a", event_type="Created", key="e1", body=b"\x00\xff", headers={"h": "v"}),
        msg("b", event_type="Unwanted"),  # no subscription takes it: the tail still sees it
        msg("c", key="e1"),
    ]
    async with broker.tail("orders") as tail, broker.tail("orders") as second:
        await broker.publish("people", [msg("elsewhere")])
        await broker.publish("orders", sent)
        got = await _gather(tail, 3)
        assert [m.id for m in await _gather(second, 3)] == ["a", "b", "c"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tail.__anext__(), backend.quiet)
    assert [m.id for m in got] == ["a", "b", "c"]
    assert (got[0].event_type, got[0].key, got[0].body, dict(got[0].headers)) == (
        "Created",
        "e1",
        b"\x00\xff",
        {"h": "v"},
    )
    await expect_exactly(broker, "work", ["before", "a", "c"], quiet=backend.quiet)


async def test_tail_of_an_unknown_topic_raises(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    with pytest.raises(UnknownTopic):
        async with broker.tail("nowhere"):
            pass


async def test_closed_tail_stops_and_leaves_nothing_behind(
    backend: BrokerFactory, tmp_path: Path
) -> None:
    broker = await backend(topology(sub("work")))
    tail = broker.tail("orders")
    async with tail:
        await broker.publish("orders", [msg("seen")])
        assert [m.id for m in await _gather(tail, 1)] == ["seen"]
        await broker.publish("orders", [msg("unread")])
        await asyncio.sleep(0.1)
        assert await _leftovers(backend.name, broker, tail, tmp_path) > 0
    assert await _leftovers(backend.name, broker, tail, tmp_path) == 0
    with pytest.raises(StopAsyncIteration):
        await tail.__anext__()
    await broker.publish("orders", [msg("after")])
    await expect_exactly(broker, "work", ["seen", "unread", "after"], quiet=backend.quiet)


async def _leftovers(name: str, broker: Broker, tail: Tail, tmp_path: Path) -> int:
    """What the open ``tail`` made on the broker (rows, queues, consumers): more than zero
    while it is open, zero once it is closed."""
    opened: Any = tail
    if name == "memory":
        internal: Any = broker
        return sum(len(t) for t in internal._tails.values())
    if name == "sqlite":
        with sqlite3.connect(tmp_path / "broker.db") as conn:
            (taps,) = conn.execute("SELECT COUNT(*) FROM taps").fetchone()
            return int(taps)
    if name in ("rabbitmq", "nats"):
        return int(await opened.exists())
    raise AssertionError(f"no leftover check for {name}")
