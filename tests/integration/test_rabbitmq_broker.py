"""The RabbitMQ broker as only it can be tested: its URL, what it creates on the server, its
headers, classic queues, delay hops, and a node of the test's own that is stopped and killed
under a running consumer. The behaviour every backend shares is proved by
``tests/conformance``."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol

import aio_pika
import aiormq
import pamqp.frame
import pytest
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic

from tidings.brokers import Delivery, Depth, Message, connect
from tidings.brokers.rabbitmq import RabbitBroker, parse_url
from tidings.brokers.rabbitmq.names import DELAY_TIERS_MS, next_hop
from tidings.errors import BrokerError, BrokerUnavailable, ConfigurationError, UnknownTopic
from tidings.topology import Backoff, Subscription, Topology

from ..conftest import require_service
from ._rabbit_node import RabbitNode, available, free_port

pytestmark = pytest.mark.rabbitmq

SERVER = "amqp://guest:guest@127.0.0.1:5672/"


def topology(*subs: Subscription) -> Topology:
    return Topology.build(["orders"], subs)


def sub(name: str = "work", **policy: object) -> Subscription:
    policy.setdefault("backoff", Backoff(initial=0.01, maximum=0.05, jitter=0))
    return Subscription.model_validate({"name": name, "topics": ("orders",), **policy})


def msgs(prefix: str, count: int, event_type: str = "Created") -> list[Message]:
    return [
        Message(id=f"{prefix}-{i}", event_type=event_type, key=f"k{i % 3}", body=b"x")
        for i in range(count)
    ]


async def take(consumer: AsyncIterator[Delivery], count: int, timeout: float = 5) -> list[Delivery]:
    async with asyncio.timeout(timeout):
        return [await anext(consumer) for _ in range(count)]


async def next_within(consumer: AsyncIterator[Delivery], seconds: float) -> Delivery | None:
    try:
        return await asyncio.wait_for(anext(consumer), seconds)
    except TimeoutError:
        return None


async def nothing_within(consumer: AsyncIterator[Delivery], seconds: float) -> bool:
    return await next_within(consumer, seconds) is None


@pytest.fixture
def namespace() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return f"it{uuid.uuid4().hex[:10]}"


class Opener(Protocol):
    async def __call__(self, **options: str) -> RabbitBroker: ...


@pytest.fixture
async def open_broker(namespace: str) -> AsyncIterator[Opener]:
    """``await open_broker(**options)`` opens a broker on the system server in the test's
    namespace; everything is closed and the namespace deleted afterwards."""
    opened: list[RabbitBroker] = []

    async def factory(**options: str) -> RabbitBroker:
        query = "&".join(f"{k}={v}" for k, v in {"namespace": namespace, **options}.items())
        broker = await RabbitBroker.open(f"{SERVER}?{query}")
        opened.append(broker)
        return broker

    yield factory
    if opened:
        with contextlib.suppress(BrokerError):
            await opened[0].delete_namespace()
    for broker in opened:
        await broker.close()


@contextlib.asynccontextmanager
async def raw_channel(url: str = SERVER) -> AsyncIterator[aiormq.Channel]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        wire = await channel.get_underlay_channel()
        assert isinstance(wire, aiormq.Channel)
        yield wire
    finally:
        await connection.close()


async def queue_exists(name: str) -> bool:
    async with raw_channel() as wire:
        try:
            await wire.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
    return True


# URL and connection -------------------------------------------------------------------------


def test_url_options_are_read_and_unknown_ones_are_refused_by_name() -> None:
    options = parse_url("amqp://u:p@h:5673/v?namespace=ns.a-1&queue_type=classic&heartbeat=5")
    assert (options.namespace, options.prefix, options.queue_type) == (
        "ns.a-1",
        "ns.a-1.",
        "classic",
    )
    assert options.client_url == "amqp://u:p@h:5673/v?heartbeat=5"
    assert options.display_url == "amqp://h:5673/v"
    assert parse_url("amqps://h/").queue_type == "quorum"

    for url, named in [
        ("amqp://h/?namespcae=x", "'namespcae'"),
        ("amqp://h/?queue_type=stream", "queue_type='stream'"),
        ("amqp://h/?namespace=bad/name", "namespace='bad/name'"),
        ("amqp://h:99999/", "(?i)port"),
    ]:
        with pytest.raises(ConfigurationError, match=named):
            parse_url(url)


async def test_unreachable_server_raises_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable):
        await connect(f"amqp://guest:guest@127.0.0.1:{free_port()}/")


async def test_refused_credentials_are_a_broker_error_not_worth_a_retry(namespace: str) -> None:
    with pytest.raises(BrokerError) as raised:
        await connect(f"amqp://guest:wrong@127.0.0.1:5672/?namespace={namespace}")
    assert not isinstance(raised.value, BrokerUnavailable)


# What it creates ------------------------------------------------------------------------------


async def test_every_name_is_prefixed_and_delete_namespace_removes_them(namespace: str) -> None:
    broker = await RabbitBroker.open(f"{SERVER}?namespace={namespace}")
    try:
        await broker.declare(topology(sub("work")))
        names = [f"{namespace}.work", f"{namespace}.work.dead", f"{namespace}.work.policy"]
        names += [f"{namespace}.work.delay.{tier}" for tier in DELAY_TIERS_MS]
        names += [f"{namespace}.tidings.catalog"]
        assert all([await queue_exists(name) for name in names])
        assert not await queue_exists("work")

        other = await RabbitBroker.open(f"{SERVER}?namespace={namespace}")
        await other.delete_namespace()  # knows the names from the namespace catalog alone
        await other.close()
        assert not any([await queue_exists(name) for name in names])
        with pytest.raises(UnknownTopic):
            await broker.publish("orders", msgs("m", 1))
    finally:
        await broker.close()


async def test_delete_namespace_is_refused_without_a_namespace() -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    broker = await RabbitBroker.open(SERVER)
    try:
        with pytest.raises(ConfigurationError, match="namespace"):
            await broker.delete_namespace()
    finally:
        await broker.close()


async def test_redeclaring_moves_bindings_to_the_event_types_now_wanted(
    open_broker: Opener,
) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub(event_types=("Created",))))
    await broker.declare(topology(sub(event_types=("Updated",))))
    await broker.publish("orders", msgs("c", 2, "Created") + msgs("u", 2, "Updated"))

    async with broker.consume("work") as consumer:
        got = await take(consumer, 2)
        assert sorted(d.message.id for d in got) == ["u-0", "u-1"]
        assert await nothing_within(consumer, 0.3)


async def test_another_queue_type_for_an_existing_namespace_is_a_configuration_error(
    open_broker: Opener,
) -> None:
    await (await open_broker()).declare(topology(sub()))
    classic = await open_broker(queue_type="classic")
    with pytest.raises(ConfigurationError, match="queue_type"):
        await classic.declare(topology(sub()))


async def test_consumer_of_another_broker_object_uses_the_stored_policy(
    open_broker: Opener,
) -> None:
    declaring = await open_broker()
    await declaring.declare(topology(sub(max_attempts=2, in_flight=3)))
    await declaring.publish("orders", msgs("m", 5))
    other = await open_broker()

    async with other.consume("work") as consumer:
        held = await take(consumer, 3)
        assert await nothing_within(consumer, 0.3), "the stored in_flight=3 was not used"
        await held[0].retry(0, "first")
        for delivery in held[1:]:
            await delivery.ack()
        rest = await take(consumer, 3)  # the other two, then the retried one
        for delivery in rest[:2]:
            await delivery.ack()
        assert (rest[2].message.id, rest[2].attempt) == (held[0].message.id, 2)
        await rest[2].retry(0, "second and last")
    [dead] = await other.dead_letters("work")
    assert (dead.message.id, dead.attempts, dead.reason) == (
        held[0].message.id,
        2,
        "second and last",
    )


# Messages and headers -------------------------------------------------------------------------


async def test_dead_letter_carries_reason_attempts_and_failure_times_in_headers(
    open_broker: Opener, namespace: str
) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub(max_attempts=5)))
    sent = Message(
        id="e-1", event_type="Created", key="ent-1", body=b"\x00\xff", headers={"a": "b"}
    )
    await broker.publish("orders", [sent])
    before = time.time()
    async with broker.consume("work") as consumer:
        [first] = await take(consumer, 1)
        await first.retry(0, "transient")
        [second] = await take(consumer, 1)
        await second.dead_letter("permanent")

    async with raw_channel() as wire:
        raw = await wire.basic_get(f"{namespace}.work.dead", no_ack=False)
        props = raw.header.properties
        headers = dict(props.headers or {})
        await wire.basic_nack(raw.delivery_tag or 0, requeue=True)
    assert (props.message_id, props.message_type, props.delivery_mode, raw.body) == (
        "e-1", "Created", 2, b"\x00\xff",
    )  # fmt: skip
    assert headers["a"] == "b"
    assert headers["x-tidings-key"] == "ent-1"
    assert headers["x-tidings-topic"] == "orders"
    assert headers["x-tidings-reason"] == "permanent"
    assert headers["x-tidings-attempts"] == 2
    first_us, last_us = headers["x-tidings-first-failed-at"], headers["x-tidings-last-failed-at"]
    assert isinstance(first_us, int) and isinstance(last_us, int)
    assert before - 1 <= first_us / 1e6 <= last_us / 1e6 <= time.time() + 1

    [dead] = await broker.dead_letters("work")
    assert dead.message == sent
    assert dead.first_failed_at is not None and dead.first_failed_at < dead.last_failed_at


async def test_headers_the_broker_reserves_are_refused_at_publish(open_broker: Opener) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub()))
    for name in ("x-tidings-attempt", "x-delivery-count", "x-death"):
        bad = Message(id="m", event_type="Created", key="", body=b"", headers={name: "1"})
        with pytest.raises(ValueError, match=name):
            await broker.publish("orders", [bad])


async def test_a_message_no_subscription_accepts_is_confirmed_and_dropped(
    open_broker: Opener,
) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub(event_types=("Created",))))
    await broker.publish("orders", msgs("nobody-wants", 3, "Deleted"))
    assert (await broker.depth("work")).ready == 0


# Delays and attempts --------------------------------------------------------------------------


def test_next_hop_never_delivers_early_and_is_at_most_ten_percent_late() -> None:
    assert next_hop(1) == next_hop(4) == DELAY_TIERS_MS[0]  # shorter than any tier
    for remaining in [9, 10, 37, 50, 300, 999, 1000, 1234, 59_000, 4_000_000]:
        hop = next_hop(remaining)
        if hop > remaining:
            assert hop <= remaining * 1.1 + 5, remaining
        else:
            assert hop == max(t for t in DELAY_TIERS_MS if t <= remaining), remaining


async def test_a_delay_between_tiers_is_served_in_hops_never_early(open_broker: Opener) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub()))
    await broker.publish("orders", msgs("m", 1))
    loop = asyncio.get_running_loop()
    async with broker.consume("work") as consumer:
        [first] = await take(consumer, 1)
        await first.retry(0.37, "not yet")  # 0.2 + 0.1 + 0.05 + the last 0.02
        retried = loop.time()
        depth = await broker.depth("work")
        assert (depth.delayed, depth.ready, depth.in_flight) == (1, 0, 0)
        [again] = await take(consumer, 1)
        waited = loop.time() - retried
    assert again.attempt == 2
    assert 0.37 <= waited < 0.6, waited


async def test_deliveries_not_yet_handed_out_keep_their_attempt_when_the_consumer_closes(
    open_broker: Opener,
) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub(max_attempts=1)))
    await broker.publish("orders", msgs("m", 10))
    async with broker.consume("work", prefetch=10) as consumer:
        [first] = await take(consumer, 1)
        await first.ack()
        await asyncio.sleep(0.1)  # the other nine wait in the consumer, never handed out

    async with broker.consume("work") as consumer:
        rest = await take(consumer, 9)
        assert [d.attempt for d in rest] == [1] * 9
        for delivery in rest:
            await delivery.ack()
    assert await broker.dead_letters("work") == []


async def test_acks_of_one_turn_go_out_in_one_write_and_never_cover_a_delivery_still_held(
    open_broker: Opener,
) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub()))
    await broker.publish("orders", msgs("m", 12))
    async with broker.consume("work", prefetch=12) as consumer:
        got = await take(consumer, 12)
        session = consumer._session
        assert session is not None
        queue, number = session.wire.write_queue, session.wire.number
        acks: list[list[tuple[int, bool]]] = []  # each write of this channel: its acks
        put_nowait = queue.put_nowait

        def watched(write: ChannelFrame) -> None:
            frames, payload = [], write.payload
            while payload:
                size, channel, frame = pamqp.frame.unmarshal(payload)
                payload = payload[size:]
                if channel == number and isinstance(frame, Basic.Ack):
                    frames.append((frame.delivery_tag, frame.multiple))
            if frames:
                acks.append(frames)
            put_nowait(write)

        queue.put_nowait = watched  # type: ignore[method-assign]
        tags = {d.message.id: d.tag for d in got}  # type: ignore[attr-defined]
        kept = {"m-3", "m-7"}
        await asyncio.gather(*(d.ack() for d in got if d.message.id not in kept))
        await asyncio.sleep(0.05)
        # m-0..m-2 in one multiple ack, the rest above m-3 one by one, all in one write.
        singles = [(tags[f"m-{i}"], False) for i in (4, 5, 6, 8, 9, 10, 11)]
        assert acks == [[(tags["m-2"], True), *singles]]
        await got[7].retry(0, "once more")
        await asyncio.sleep(0.05)
        assert acks[1:] == [[(tags["m-7"], False)]]
    # Closing gave m-3 back; m-7 came back as a retry; no ack took either with it.
    async with broker.consume("work") as consumer:
        back = await take(consumer, 2)
        assert sorted((d.message.id, d.attempt) for d in back) == [("m-3", 2), ("m-7", 2)]
        for delivery in back:
            await delivery.ack()
        assert await nothing_within(consumer, 0.3)
    assert (await broker.depth("work")).ready == 0


async def test_a_delivery_held_long_does_not_make_the_consumer_remember_every_tag_after_it(
    open_broker: Opener,
) -> None:
    broker = await open_broker()
    await broker.declare(topology(sub()))
    await broker.publish("orders", msgs("m", 200))
    async with broker.consume("work", prefetch=200) as consumer:
        first, *rest = await take(consumer, 200)
        for delivery in rest:
            await delivery.ack()
            await asyncio.sleep(0)  # each ack in a turn of its own
        await asyncio.sleep(0.05)
        session = consumer._session
        assert session is not None
        assert len(session._order) < 70  # compacted: m-0, and settled tags up to 64 more
        await first.ack()
        await asyncio.sleep(0.05)
    assert (await broker.depth("work")).ready == 0
    async with broker.consume("work") as consumer:
        assert await nothing_within(consumer, 0.3)


async def test_classic_queues_work_and_count_a_return_as_one_attempt(open_broker: Opener) -> None:
    broker = await open_broker(queue_type="classic")
    await broker.declare(topology(sub(max_attempts=3)))
    await broker.publish("orders", msgs("m", 3))

    consumer = broker.consume("work", prefetch=3)
    held = await take(consumer, 3)
    await held[0].retry(0.05, "later")
    await held[1].dead_letter("never")
    await consumer.close()  # held[2] comes back: redelivered, attempt 2

    async with broker.consume("work") as consumer:
        got = {d.message.id: d for d in await take(consumer, 2)}
        assert (got["m-0"].attempt, got["m-2"].attempt) == (2, 2)
        for delivery in got.values():
            await delivery.ack()
    [dead] = await broker.dead_letters("work")
    assert (dead.message.id, dead.attempts, dead.reason) == ("m-1", 1, "never")
    assert await broker.redrive("work") == 1
    depth = await broker.depth("work")
    assert (depth.ready, depth.dead) == (1, 0)


# A node of the test's own, restarted under a consumer -----------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitNode]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    own = RabbitNode(tmp_path / "rabbit")
    try:
        yield own
    finally:
        own.kill()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("crash", ["rabbitmqctl stop", "kill -9"])
async def test_consumer_reconnects_after_a_node_restart_and_nothing_confirmed_is_lost(
    node: RabbitNode, crash: str
) -> None:
    await asyncio.to_thread(node.start)
    broker = await connect(node.url(namespace="restart"))
    await broker.declare(topology(sub(in_flight=20, max_attempts=100)))
    confirmed: list[str] = []
    seen: Counter[str] = Counter()
    await broker.publish("orders", before := msgs("before", 300))
    confirmed += [m.id for m in before]
    consumer = broker.consume("work")
    stopping = asyncio.Event()

    async def listen() -> None:
        async for delivery in consumer:
            seen[delivery.message.id] += 1
            await asyncio.sleep(0.002)
            await delivery.ack()

    async def publish_meanwhile() -> None:
        batch_no = 0
        while not stopping.is_set():
            batch = msgs(f"during-{batch_no}", 10)
            try:
                await broker.publish("orders", batch)
            except BrokerUnavailable:
                await asyncio.sleep(0.1)
                continue  # the same batch again: at least once
            confirmed.extend(m.id for m in batch)
            batch_no += 1
            await asyncio.sleep(0.02)

    listener = asyncio.create_task(listen())
    publisher = asyncio.create_task(publish_meanwhile())
    try:
        await _until(lambda: len(seen) >= 100, 30)
        await asyncio.to_thread(node.stop if crash == "rabbitmqctl stop" else node.kill)
        seen_while_down, confirmed_while_down = len(seen), len(confirmed)
        await asyncio.sleep(1)
        await asyncio.to_thread(node.start)
        await _until(lambda: len(confirmed) >= confirmed_while_down + 100, 60)
        stopping.set()
        await publisher
        await _until(lambda: set(confirmed) <= set(seen), 60)
        assert not listener.done(), "the consumer's iteration ended"
    finally:
        stopping.set()
        publisher.cancel()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await consumer.close()

    missing = set(confirmed) - set(seen)
    assert not missing, f"lost {len(missing)}: {sorted(missing)[:10]}"
    assert len(seen) > seen_while_down, "the consumer did not reconnect by itself"
    async with broker.consume("work") as rest:  # at least once: only duplicates are left
        while (late := await next_within(rest, 0.5)) is not None:
            assert late.message.id in seen, late.message.id
            await late.ack()
    assert await broker.depth("work") == Depth(ready=0, in_flight=0, delayed=0, dead=0)
    await broker.close()


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)
