"""Dead letters: when a message lands there, what is kept, redrive, purge; and depth counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tidings.brokers import Broker, Delivery, Depth

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


async def _dead_letter_all(broker: Broker, subscription: str, count: int) -> list[Delivery]:
    async with broker.consume(subscription) as consumer:
        taken = await take(consumer, count)
        for delivery in taken:
            await delivery.dead_letter(f"cannot use {delivery.message.id}")
    return taken


async def test_message_is_dead_lettered_after_max_attempts_with_reason_and_times(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", max_attempts=3)))
    await broker.publish("orders", [msg("poison", key="k"), msg("fine", key="other")])
    started = datetime.now(UTC)

    async with broker.consume("work") as consumer:
        attempts: list[int] = []
        fine_acked = False
        while len(attempts) < 3 or not fine_acked:
            [delivery] = await take(consumer, 1)
            if delivery.message.id == "fine":
                assert not fine_acked, "fine was delivered twice"
                fine_acked = True
                await delivery.ack()
                continue
            attempts.append(delivery.attempt)
            await delivery.retry(0.05, f"boom {delivery.attempt}")
        assert attempts == [1, 2, 3]
        await assert_nothing_arrives(consumer, backend.quiet)

    [dead] = await broker.dead_letters("work")
    assert dead.message == msg("poison", key="k")
    assert (dead.subscription, dead.topic, dead.attempts) == ("work", "orders", 3)
    assert "boom 3" in dead.reason
    assert dead.first_failed_at is not None
    slack = timedelta(seconds=1)
    assert started - slack <= dead.first_failed_at <= dead.last_failed_at
    assert dead.last_failed_at <= datetime.now(UTC) + slack
    depth = await broker.depth("work")
    assert (depth.pending, depth.dead) == (0, 1)


async def test_dead_letter_keeps_the_reason_given(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    await broker.publish("orders", [msg("bad")])

    async with broker.consume("work") as consumer:
        [delivery] = await take(consumer, 1)
        await delivery.dead_letter("payload fails schema v1")

    [dead] = await broker.dead_letters("work")
    assert (dead.message.id, dead.reason, dead.attempts) == ("bad", "payload fails schema v1", 1)
    await expect_exactly(broker, "work", [], quiet=backend.quiet)


async def test_unsettled_message_is_dead_lettered_after_its_last_attempt(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", max_attempts=2)))
    await broker.publish("orders", [msg("crasher")])

    for attempt in (1, 2):
        consumer = broker.consume("work")
        [delivery] = await take(consumer, 1)
        assert delivery.attempt == attempt
        await consumer.close()  # as if the consumer crashed on it

    [dead] = await broker.dead_letters("work")
    assert (dead.message.id, dead.attempts) == ("crasher", 2)
    assert dead.reason
    await expect_exactly(broker, "work", [], quiet=backend.quiet)


async def test_redrive_delivers_dead_letters_again_from_attempt_one(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work", max_attempts=2)))
    sent = msgs("m", 3)
    await broker.publish("orders", sent)
    await _dead_letter_all(broker, "work", 3)
    dead = await broker.dead_letters("work")
    assert sorted(ids(d.message for d in dead)) == sorted(ids(sent))

    assert await broker.redrive("work", ["no-such-id"]) == 0
    assert await broker.redrive("work", [dead[0].id]) == 1
    [again] = await expect_exactly(broker, "work", [dead[0].message.id], quiet=backend.quiet)
    assert again.attempt == 1
    assert [d.id for d in await broker.dead_letters("work")] == [d.id for d in dead[1:]]

    assert await broker.redrive("work") == 2
    got = await expect_exactly(
        broker, "work", ids(d.message for d in dead[1:]), quiet=backend.quiet
    )
    assert [d.attempt for d in got] == [1, 1]
    assert await broker.dead_letters("work") == []
    assert (await broker.depth("work")).dead == 0


async def test_purge_deletes_every_dead_letter(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work"), sub("bystander")))
    await broker.publish("orders", msgs("m", 4))
    await _dead_letter_all(broker, "work", 4)
    await _dead_letter_all(broker, "bystander", 1)

    assert await broker.purge("work") == 4
    assert await broker.purge("work") == 0
    assert await broker.dead_letters("work") == []
    assert (await broker.depth("work")).dead == 0
    assert len(await broker.dead_letters("bystander")) == 1
    await expect_exactly(broker, "work", [], quiet=backend.quiet)


async def test_dead_letters_are_listed_oldest_first_up_to_the_limit(
    backend: BrokerFactory,
) -> None:
    broker = await backend(topology(sub("work")))
    sent = msgs("m", 5)
    await broker.publish("orders", sent)
    taken = await _dead_letter_all(broker, "work", 5)

    listed = await broker.dead_letters("work", limit=3)
    assert ids(d.message for d in listed) == ids(taken[:3])
    assert len({d.id for d in await broker.dead_letters("work")}) == 5


async def test_depth_counts_ready_in_flight_delayed_and_dead(backend: BrokerFactory) -> None:
    broker = await backend(topology(sub("work")))
    sent = msgs("m", 10)
    await broker.publish("orders", sent)
    assert await broker.depth("work") == _depth(ready=10)

    consumer = broker.consume("work", prefetch=4)
    acked, retried, dead, _held = await take(consumer, 4)
    assert await broker.depth("work") == _depth(ready=6, in_flight=4)
    await acked.ack()
    await retried.retry(0.5, "later")
    await dead.dead_letter("never")
    depth = await broker.depth("work")
    assert depth == _depth(ready=6, in_flight=1, delayed=1, dead=1)
    assert depth.pending == 8

    await consumer.close()
    assert await broker.depth("work") == _depth(ready=7, delayed=1, dead=1)
    assert await broker.redrive("work") == 1
    rest = [m.id for m in sent if m.id != acked.message.id]
    await expect_exactly(broker, "work", rest, quiet=backend.quiet)


def _depth(ready: int = 0, in_flight: int = 0, delayed: int = 0, dead: int = 0) -> Depth:
    return Depth(ready=ready, in_flight=in_flight, delayed=delayed, dead=dead)
