"""The NATS broker as only it can be tested: its URLs, what it leaves on the server (streams,
subjects, headers), redrive that reaches one subscription only, filter changes, and servers
that stop and come back. The behaviour every backend shares is proved by
``tests/conformance``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from tidings.brokers import Delivery, Message, connect
from tidings.brokers.nats import NatsBroker, catalog, codec, parse_url
from tidings.brokers.nats.wire import Settler
from tidings.errors import BrokerError, BrokerUnavailable, ConfigurationError, EventTooLarge
from tidings.topology import Backoff, Subscription, Topology

from ..conftest import require_service
from ._nats_servers import NATS_SERVER, NatsServer, cluster, free_port, wait_for_jetstream

pytestmark = pytest.mark.nats

SHARED = "nats://127.0.0.1:4222"
FAST = Backoff(initial=0.01, maximum=0.05, jitter=0)


def subscription(
    name: str, topics: tuple[str, ...] = ("orders",), **policy: object
) -> Subscription:
    return Subscription.model_validate(
        {"name": name, "topics": topics, "backoff": FAST, "in_flight": 50, **policy}
    )


def orders(prefix: str, count: int, event_type: str = "Created") -> list[Message]:
    return [
        Message(id=f"{prefix}-{i}", event_type=event_type, key=f"k{i % 7}", body=b"%d" % i)
        for i in range(count)
    ]


async def take(broker: NatsBroker, name: str, count: int, timeout: float = 10) -> list[Delivery]:
    """Consume and ack ``count`` deliveries of ``name``."""
    got: list[Delivery] = []
    async with broker.consume(name) as consumer:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                delivery = await consumer.__anext__()
                got.append(delivery)
                await delivery.ack()
    return got


async def nothing_more(broker: NatsBroker, name: str, seconds: float = 0.5) -> None:
    async with broker.consume(name) as consumer:
        try:
            extra = await asyncio.wait_for(consumer.__anext__(), seconds)
        except TimeoutError:
            return
    raise AssertionError(f"unexpected delivery of {extra.message.id!r} to {name}")


@pytest.fixture
def namespace() -> str:
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def shared(namespace: str) -> AsyncIterator[NatsBroker]:
    require_service("NATS", "127.0.0.1", 4222)
    broker = await NatsBroker.open(f"{SHARED}/?namespace={namespace}")
    try:
        yield broker
    finally:
        await broker.delete_namespace()
        await broker.close()


def needs_nats_server() -> None:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip(f"{NATS_SERVER} is not installed")


# URLs and connecting


def test_url_names_servers_namespace_and_replicas() -> None:
    options = parse_url("nats://u:secret@a:4222,b:4223/?namespace=prod-1&replicas=3")
    assert options.servers == ("nats://u:secret@a:4222", "nats://u:secret@b:4223")
    assert (options.namespace, options.replicas) == ("prod-1", 3)
    assert "secret" not in repr(options)
    assert parse_url("nats://127.0.0.1").namespace == "tidings"
    assert parse_url("tls://h:4222").servers == ("tls://h:4222",)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("nats://h/?color=blue", "unknown option 'color'"),
        ("nats://h/?namespace=a_b", "namespace='a_b'"),
        ("nats://h/?namespace=a.b", "namespace='a.b'"),
        ("nats://h/?replicas=0", "replicas='0'"),
        ("nats://h/?replicas=three", "replicas='three'"),
        ("nats:///?namespace=x", "names no server"),
        ("nats://h/some/path", "unexpected path"),
        ("nats://u:secret@/", "names no server"),
    ],
)
async def test_bad_url_is_a_configuration_error_naming_the_problem(bad: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named) as caught:
        await connect(bad)
    assert "secret" not in str(caught.value)


async def test_unreachable_server_is_broker_unavailable_within_a_few_seconds() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot connect"):
        await connect(f"nats://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/")
    assert time.monotonic() - started < 5


# Pure parts: routes and the wire format


def test_routes_judge_each_message_by_the_filter_in_force_when_it_was_published() -> None:
    created = subscription("work", topics=("orders",), event_types=("Created",))
    policy = catalog.plan(None, created, {})
    assert policy.accepts("orders", "Created", 1)
    assert not policy.accepts("orders", "Updated", 1)

    both = subscription("work", topics=("orders", "people"), event_types=("Created", "Updated"))
    policy = catalog.plan(policy, both, {"orders": 10, "people": 1})
    assert not policy.accepts("orders", "Updated", 9)
    assert policy.accepts("orders", "Updated", 10)
    assert policy.accepts("people", "Updated", 1)

    policy = catalog.plan(policy, created, {"orders": 20, "people": 5})
    assert policy.accepts("orders", "Updated", 19)
    assert not policy.accepts("orders", "Updated", 20)
    assert policy.accepts("people", "Created", 4)
    assert not policy.accepts("people", "Created", 5)
    assert catalog.dropped(policy, "people") == 5
    assert catalog.dropped(policy, "orders") is None
    assert catalog.Policy.from_json(policy.to_json(), 7).routes == policy.routes


def test_every_header_value_and_key_comes_back_exactly() -> None:
    headers = {"plain": "v", "padded": " v ", "lines": "a\r\nb", "empty": "", "uni": "ü ✓"}
    sent = Message(id=" id\n", event_type="Created", key="k\t1", body=b"\x00", headers=headers)
    encoded = codec.encode(sent, 1 << 20)
    assert all(v == v.strip() and "\n" not in v for v in encoded.headers.values())
    got, meta = codec.decode(encoded.headers, encoded.body, "Created", "fallback")
    assert got == sent
    assert meta == {}
    for reserved in ("Nats-Msg-Id", "tidings-key", "bad name"):
        with pytest.raises(ValueError, match="header"):
            codec.encode(
                Message(id="x", event_type="E", key="", body=b"", headers={reserved: "v"}), 1 << 20
            )


# What the broker leaves on the server


async def test_names_are_namespaced_and_delete_namespace_removes_only_its_own(
    shared: NatsBroker, namespace: str
) -> None:
    topology = Topology.build(["orders"], [subscription("work")])
    await shared.declare(topology)
    other = await NatsBroker.open(f"{SHARED}/?namespace={namespace}-x")
    try:
        await other.declare(topology)
        nc = await nats.connect(SHARED)
        try:
            names = await _stream_names(nc)
            ours = sorted(n for n in names if n.startswith(f"{namespace}_"))
            assert ours == [
                f"{namespace}__dead",
                f"{namespace}__redrive",
                f"{namespace}__subscriptions",
                f"{namespace}_orders",
            ]
            info = json.loads(
                (await nc.request(f"$JS.API.STREAM.INFO.{namespace}_orders", b"")).data
            )
            assert info["config"]["subjects"] == [f"{namespace}.orders.*"]
            assert info["config"]["storage"] == "file"
            await other.delete_namespace()
            names = await _stream_names(nc)
            assert not [n for n in names if n.startswith(f"{namespace}-x_")]
            assert len([n for n in names if n.startswith(f"{namespace}_")]) == 4
        finally:
            await nc.close()
    finally:
        await other.close()


async def test_messages_are_stored_on_topic_dot_event_type_with_id_key_and_headers(
    shared: NatsBroker, namespace: str
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work")]))
    nc = await nats.connect(SHARED)
    try:
        sub = await nc.subscribe(f"{namespace}.orders.>")
        await nc.flush()
        headers = {"correlation-id": "c-1", "padded": "  kept  ", "lines": "a\nb"}
        await shared.publish(
            "orders",
            [Message(id="e-1", event_type="Created", key="p-1", body=b"{}", headers=headers)],
        )
        raw = await sub.next_msg(timeout=5)
    finally:
        await nc.close()
    assert raw.subject == f"{namespace}.orders.Created"
    assert raw.data == b"{}"
    assert raw.headers is not None
    assert raw.headers["Nats-Msg-Id"] == "e-1"
    assert raw.headers["Tidings-Key"] == "p-1"
    assert raw.headers["correlation-id"] == "c-1"
    [got] = await take(shared, "work", 1)
    assert dict(got.message.headers) == headers


async def test_same_message_id_within_the_duplicate_window_is_stored_once(
    shared: NatsBroker,
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work")]))
    once = orders("dup", 1)
    await asyncio.gather(shared.publish("orders", once), shared.publish("orders", once))
    await shared.publish("orders", once)
    await take(shared, "work", 1)
    await nothing_more(shared, "work")


async def test_large_bodies_are_compressed_to_fit_and_incompressible_ones_refused(
    shared: NatsBroker,
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work")]))
    big = Message(id="big", event_type="Created", key="", body=b"abc" * 1_000_000)
    await shared.publish("orders", [big])
    [got] = await take(shared, "work", 1)
    assert got.message == big
    noise = Message(id="noise", event_type="Created", key="", body=os.urandom(2_000_000))
    with pytest.raises(EventTooLarge):
        await shared.publish("orders", [noise])


async def test_dead_letter_keeps_reason_attempts_and_failure_times_in_headers(
    shared: NatsBroker, namespace: str
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work", max_attempts=2)]))
    sent = Message(id="bad", event_type="Created", key="k", body=b"x", headers={"h": "v"})
    await shared.publish("orders", [sent])
    before = datetime.now(UTC)
    async with shared.consume("work") as consumer:
        first = await consumer.__anext__()
        await first.retry(0, "first failure")
        second = await consumer.__anext__()
        await second.retry(0, "second failure\nwith a line break")
    nc = await nats.connect(SHARED)
    try:
        js = nc.jetstream()
        stored = await js.get_msg(f"{namespace}__dead", 1)
    finally:
        await nc.close()
    assert stored.subject == f"{namespace}._dead.work"
    assert stored.data == b"x"
    headers = stored.headers or {}
    assert headers["Tidings-Attempts"] == "2"
    assert headers["Tidings-Topic"] == "orders"
    assert headers["Tidings-Message-Id"] == "bad"
    assert headers["Tidings-Event-Type"] == "Created"
    assert "Tidings-Reason" in headers["Tidings-Quoted"].split(",")
    first_failed = datetime.fromisoformat(headers["Tidings-First-Failed-At"])
    last_failed = datetime.fromisoformat(headers["Tidings-Last-Failed-At"])
    assert before <= first_failed <= last_failed <= datetime.now(UTC)
    [dead] = await shared.dead_letters("work")
    assert (dead.message, dead.reason, dead.attempts) == (
        sent,
        "second failure\nwith a line break",
        2,
    )


async def test_redrive_reaches_only_its_own_subscription(shared: NatsBroker) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("mine"), subscription("theirs")]))
    await shared.publish("orders", orders("m", 3))
    await take(shared, "theirs", 3)
    async with shared.consume("mine") as consumer:
        for _ in range(3):
            delivery = await consumer.__anext__()
            await delivery.dead_letter("broken")
    assert await shared.redrive("mine") == 3

    again = await take(shared, "mine", 3)
    assert sorted(d.message.id for d in again) == ["m-0", "m-1", "m-2"]
    assert {(d.topic, d.attempt) for d in again} == {("orders", 1)}
    await nothing_more(shared, "theirs")
    assert (await shared.depth("theirs")).pending == 0


async def test_lease_that_ran_out_on_the_last_attempt_dead_letters_with_the_reason(
    shared: NatsBroker,
) -> None:
    await shared.declare(
        Topology.build(["orders"], [subscription("work", max_attempts=1, lease_seconds=0.5)])
    )
    await shared.publish("orders", orders("slow", 1))
    async with shared.consume("work") as holder:
        await holder.__anext__()
        await asyncio.sleep(0.7)
    async with shared.consume("work") as rescuer:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rescuer.__anext__(), 1.5)
    [dead] = await shared.dead_letters("work")
    assert (dead.message.id, dead.attempts) == ("slow-0", 1)
    assert "last attempt" in dead.reason


async def test_deliveries_fetched_but_not_handed_out_come_back_uncounted(
    shared: NatsBroker,
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work", max_attempts=1)]))
    await shared.publish("orders", orders("m", 10))
    consumer = shared.consume("work", prefetch=10)
    handed = await consumer.__anext__()
    async with asyncio.timeout(5):
        while (await shared.depth("work")).in_flight < 10:
            await asyncio.sleep(0.01)
    await consumer.close()

    again = await take(shared, "work", 9)
    assert {d.attempt for d in again} == {1}
    assert handed.message.id not in {d.message.id for d in again}
    [dead] = await shared.dead_letters("work")
    assert (dead.message.id, dead.attempts) == (handed.message.id, 1)
    assert (await shared.depth("work")).pending == 0


async def test_cancelled_waits_neither_lose_nor_duplicate_deliveries(shared: NatsBroker) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work")]))
    sent = orders("m", 300)
    await shared.publish("orders", sent)
    got: list[Delivery] = []
    async with shared.consume("work", prefetch=10) as consumer, asyncio.timeout(30):
        while len(got) < len(sent):
            try:
                delivery = await asyncio.wait_for(consumer.__anext__(), 0.0003)
            except TimeoutError:
                continue
            got.append(delivery)
            await delivery.ack()
    assert sorted(d.message.id for d in got) == sorted(m.id for m in sent)
    assert {d.attempt for d in got} == {1}
    await nothing_more(shared, "work")


async def test_acks_made_a_few_loop_turns_apart_are_confirmed_together(
    shared: NatsBroker,
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work")]))
    await shared.publish("orders", orders("m", 40))
    nc = shared._core.nc

    async def ack_after(delivery: Delivery, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        await delivery.ack()

    async with shared.consume("work", prefetch=40) as consumer, asyncio.timeout(10):
        got = [await consumer.__anext__() for _ in range(40)]
        await asyncio.sleep(0.2)  # what the pull requests still bring arrives first
        answers = nc.stats["in_msgs"]
        started = time.monotonic()
        await asyncio.gather(*(ack_after(d, 3 * i) for i, d in enumerate(got)))
        took = time.monotonic() - started
        answers = nc.stats["in_msgs"] - answers
    # One confirmation per burst; a burst ends only after quiet turns, or SPAN seconds.
    assert answers <= took / Settler.SPAN + 3, f"{answers} confirmations for 40 acks"
    await nothing_more(shared, "work")


async def test_prefetch_of_one_reads_every_topic_of_the_subscription(shared: NatsBroker) -> None:
    both = subscription("work", topics=("orders", "people"))
    await shared.declare(Topology.build(["orders", "people"], [both]))
    await shared.publish("orders", orders("o", 5))
    await shared.publish("people", orders("p", 5))
    got: list[str] = []
    async with shared.consume("work", prefetch=1) as consumer, asyncio.timeout(10):
        while len(got) < 10:
            delivery = await consumer.__anext__()
            got.append(delivery.message.id)
            await delivery.ack()
    assert sorted(got) == sorted(m.id for m in orders("o", 5) + orders("p", 5))


async def test_idle_consumer_costs_next_to_no_cpu(shared: NatsBroker) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work")]))
    async with shared.consume("work") as consumer:
        waiting = asyncio.create_task(consumer.__anext__())
        await asyncio.sleep(0.5)
        before = time.process_time()
        await asyncio.sleep(3)
        used = time.process_time() - before
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert used / 3 < 0.02, f"{used / 3:.1%} of a core"


async def test_filter_changes_apply_to_messages_by_when_they_were_published(
    shared: NatsBroker,
) -> None:
    await shared.declare(
        Topology.build(["orders"], [subscription("work", event_types=("Created",))])
    )
    await shared.publish("orders", orders("c1", 1) + orders("u1", 1, "Updated"))
    await shared.declare(
        Topology.build(["orders"], [subscription("work", event_types=("Created", "Updated"))])
    )
    await shared.publish("orders", orders("u2", 1, "Updated") + orders("d2", 1, "Deleted"))
    got = await take(shared, "work", 2)
    assert sorted(d.message.id for d in got) == ["c1-0", "u2-0"]
    await nothing_more(shared, "work")

    await shared.publish("orders", orders("u3", 1, "Updated"))
    await shared.declare(
        Topology.build(["orders"], [subscription("work", event_types=("Created",))])
    )
    await shared.publish("orders", orders("u4", 1, "Updated") + orders("c4", 1))
    got = await take(shared, "work", 2)
    assert sorted(d.message.id for d in got) == ["c4-0", "u3-0"]
    await nothing_more(shared, "work")
    assert (await shared.depth("work")).pending == 0


async def test_declaring_again_changes_the_lease_of_an_existing_subscription(
    shared: NatsBroker, namespace: str
) -> None:
    await shared.declare(Topology.build(["orders"], [subscription("work", lease_seconds=60)]))
    await shared.declare(Topology.build(["orders"], [subscription("work", lease_seconds=0.5)]))
    await shared.publish("orders", orders("m", 1))
    async with shared.consume("work") as holder, shared.consume("work") as rescuer:
        await holder.__anext__()
        again = await asyncio.wait_for(rescuer.__anext__(), 5)
        assert again.attempt == 2
        await again.ack()
    nc = await nats.connect(SHARED)
    try:
        reply = await nc.request(f"$JS.API.CONSUMER.INFO.{namespace}_orders.work", b"")
        assert json.loads(reply.data)["config"]["ack_wait"] == 500_000_000
    finally:
        await nc.close()


async def test_dropped_topic_is_drained_then_its_consumer_deleted(
    shared: NatsBroker, namespace: str
) -> None:
    both = subscription("work", topics=("orders", "people"))
    await shared.declare(Topology.build(["orders", "people"], [both]))
    await shared.publish("people", orders("before", 2))
    only_orders = subscription("work", topics=("orders",))
    await shared.declare(Topology.build(["orders", "people"], [only_orders]))
    await shared.publish("people", orders("after", 2))
    got = await take(shared, "work", 2)
    assert sorted(d.message.id for d in got) == ["before-0", "before-1"]
    await nothing_more(shared, "work")

    await shared.declare(Topology.build(["orders", "people"], [only_orders]))
    nc = await nats.connect(SHARED)
    try:
        reply = await nc.request(f"$JS.API.CONSUMER.INFO.{namespace}_people.work", b"")
        assert json.loads(reply.data)["error"]["code"] == 404
    finally:
        await nc.close()


async def _stream_names(nc: Client) -> list[str]:
    reply = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)
    return list(json.loads(reply.data).get("streams") or [])


# Servers that stop and come back


async def _consume_into(broker: NatsBroker, name: str, seen: list[str]) -> None:
    """Consume forever, acking; an ack that fails is left to come back."""
    async with broker.consume(name, prefetch=20) as consumer:
        async for delivery in consumer:
            seen.append(delivery.message.id)
            with contextlib.suppress(BrokerError):
                await delivery.ack()


async def _publish_until_stored(broker: NatsBroker, messages: list[Message]) -> None:
    """Publish, retrying while the server is away: publishing is at least once."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await broker.publish("orders", messages)
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _publish_load(
    broker: NatsBroker, published: list[str], stop: asyncio.Event, *, pause: float
) -> None:
    """Publish batches of 20 until ``stop``, each until stored, noting their ids."""
    batch = 0
    while not stop.is_set():
        messages = orders(f"b{batch}", 20)
        await _publish_until_stored(broker, messages)
        published.extend(m.id for m in messages)
        batch += 1
        await asyncio.sleep(pause)


async def _wait_for(seen: list[str], wanted: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen):
        if time.monotonic() > deadline:
            missing = sorted(wanted - set(seen))
            raise AssertionError(f"{len(missing)} never delivered, e.g. {missing[:10]}")
        await asyncio.sleep(0.05)


async def test_consumer_recovers_by_itself_after_a_server_restart(tmp_path: Path) -> None:
    needs_nats_server()
    server = NatsServer(tmp_path)
    server.start()
    try:
        await wait_for_jetstream(server.url)
        broker = await NatsBroker.open(f"{server.url}/?namespace=restart")
        await broker.declare(Topology.build(["orders"], [subscription("work", lease_seconds=3.0)]))
        first, second = orders("before", 300), orders("after", 300)
        await broker.publish("orders", first)
        seen: list[str] = []
        consuming = asyncio.create_task(_consume_into(broker, "work", seen))
        try:
            while len(seen) < 100:
                await asyncio.sleep(0.01)
            server.stop(signal.SIGTERM)
            server.start()
            await _publish_until_stored(broker, second)
            await _wait_for(seen, {m.id for m in first + second}, timeout=30)
            assert not consuming.done(), "the consumer gave up instead of recovering"
        finally:
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
        depth = await broker.depth("work")
        assert depth.ready == 0, depth
        await broker.close()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.chaos
async def test_replicated_stream_loses_nothing_when_its_leader_is_killed_under_load(
    tmp_path: Path,
) -> None:
    needs_nats_server()
    nodes = cluster(tmp_path, 3)
    for node in nodes:
        node.start()
    try:
        urls = ",".join(n.url.removeprefix("nats://") for n in nodes)
        await wait_for_jetstream(nodes[0].url)
        broker = await _open_when_ready(f"nats://{urls}/?namespace=chaos&replicas=3")
        await broker.declare(Topology.build(["orders"], [subscription("work", lease_seconds=3.0)]))
        published: list[str] = []
        seen: list[str] = []
        stop = asyncio.Event()

        publishing = asyncio.create_task(_publish_load(broker, published, stop, pause=0.01))
        consuming = asyncio.create_task(_consume_into(broker, "work", seen))
        try:
            while len(seen) < 500:
                await asyncio.sleep(0.01)
            info = await broker._core.api.stream_info("chaos_orders")
            [victim] = [n for n in nodes if n.name == info["cluster"]["leader"]]
            victim.stop(signal.SIGKILL)
            before_kill = len(published)
            async with asyncio.timeout(60):
                while len(published) < before_kill + 400:
                    await asyncio.sleep(0.05)
            stop.set()
            await publishing
            await _wait_for(seen, set(published), timeout=90)
        finally:
            stop.set()
            for task in (publishing, consuming):
                task.cancel()
            await asyncio.gather(publishing, consuming, return_exceptions=True)
        await broker.close()
    finally:
        for node in nodes:
            node.stop()


async def _open_when_ready(url: str) -> NatsBroker:
    deadline = time.monotonic() + 30
    while True:
        try:
            broker = await NatsBroker.open(url)
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        try:
            await broker.declare(Topology())
            return broker
        except BrokerUnavailable:
            await broker.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
