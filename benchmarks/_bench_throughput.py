"""Cases 1, 2 and 5 of ``bench.py``: listener throughput beside the raw client and FastStream,
relay throughput beside the raw client's confirmed publish, and fan-out.

Every variant of a case reads its own subscription of one topic, so one publish fills them
all with the same events, and the variants drain in turn, in another order each round; the
median of the rounds is the figure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from _bench_common import (
    Place,
    Results,
    median,
    person_events,
    publish_events,
    until,
)
from _side_by_side import Clock
from tidings.brokers import Broker
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event
from tidings.listener import Listener, ListenerRuntime, Outcome
from tidings.outbox import Outbox, Relay
from tidings.testing import event_message
from tidings.topology import Subscription, Topology

PREFETCH = 256
INBOX_BATCH = 64
PUBLISH_BATCH = 500
EVENT_TYPE = "PersonUpdatedEvent"

Drain = Callable[[str, int], Awaitable[float]]
"""Drains ``count`` events from a subscription; returns the seconds it took."""


async def noop(event: Event, session: AsyncSession) -> None:
    return None


def subscription(name: str, in_flight: int = PREFETCH, topic: str = "person") -> Subscription:
    return Subscription(name=name, topics=(topic,), in_flight=in_flight)


async def run_listener(
    broker: Broker,
    sub: Subscription,
    sessions: async_sessionmaker[AsyncSession],
    count: int,
    *,
    inbox: bool,
    timeout: float,
) -> float:
    """Seconds the listener runtime takes to apply ``count`` events of ``sub``, no-op handler."""
    listener = Listener(sub.name)
    listener.on(EVENT_TYPE)(noop)
    runtime = ListenerRuntime(
        listener,
        broker=broker,
        subscription=sub,
        sessions=sessions,
        inbox=inbox,
        batch_size=INBOX_BATCH if inbox else 1,
    )
    started = time.perf_counter()
    task = asyncio.create_task(runtime.run())
    try:
        await until(
            lambda: runtime.stats[Outcome.APPLIED] + runtime.stats[Outcome.DUPLICATE] >= count,
            timeout,
        )
        return time.perf_counter() - started
    finally:
        runtime.stop()
        await task


async def broker_drain(broker: Broker, name: str, count: int) -> float:
    """The broker layer alone: consume and ack with concurrent no-op handlers."""
    done = asyncio.Event()
    acked = 0
    tasks: set[asyncio.Task[None]] = set()

    async def handle(delivery: Any) -> None:
        nonlocal acked
        await delivery.ack()
        acked += 1
        if acked >= count:
            done.set()

    started = time.perf_counter()
    async with broker.consume(name, prefetch=PREFETCH) as consumer:

        async def pump() -> None:
            async for delivery in consumer:
                task = asyncio.create_task(handle(delivery))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        pumping = asyncio.create_task(pump())
        await done.wait()
        took = time.perf_counter() - started
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
    return took


class RawAmqp:
    """aio-pika on the subscription's own queue: a consumer callback acking each message."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.connection: Any = None

    async def __aenter__(self) -> RawAmqp:
        import aio_pika

        self.connection = await aio_pika.connect(str(self.place.broker_url.split("?")[0]))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()

    async def drain(self, name: str, count: int) -> float:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(f"{self.place.namespace}.{name}", ensure=False)
        done = asyncio.Event()
        got = 0

        async def handle(message: Any) -> None:
            nonlocal got
            await message.ack()
            got += 1
            if got >= count:
                done.set()

        started = time.perf_counter()
        tag = await queue.consume(handle)
        await done.wait()
        took = time.perf_counter() - started
        await queue.cancel(tag)
        await channel.close()
        return took

    async def publish(self, bodies: list[bytes], batch: int) -> float:
        """Publish with confirms, each batch concurrently (as fast as aio-pika goes)."""
        import aio_pika

        channel = await self.connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{self.place.namespace}.person", ensure=False)
        started = time.perf_counter()
        for i in range(0, len(bodies), batch):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body,
                            message_id=f"raw-{started}-{j}",
                            type=EVENT_TYPE,
                            headers={"correlation-id": f"c-{j}"},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=EVENT_TYPE,
                    )
                    for j, body in enumerate(bodies[i : i + batch], start=i)
                )
            )
        took = time.perf_counter() - started
        await channel.close()
        return took


class RawNats:
    """nats-py on the subscription's own durable consumer: a pull loop acking each message."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.nc: Any = None

    async def __aenter__(self) -> RawNats:
        import nats

        self.nc = await nats.connect(self.place.broker_url.split("/?")[0])
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.nc.close()

    async def drain(self, name: str, count: int) -> float:
        js = self.nc.jetstream()
        psub = await js.pull_subscribe_bind(name, stream=f"{self.place.namespace}_person")
        got = 0
        started = time.perf_counter()
        while got < count:
            for msg in await psub.fetch(PREFETCH, timeout=10):
                await msg.ack()
                got += 1
        await self.nc.flush()
        took = time.perf_counter() - started
        await psub.unsubscribe()
        return took

    async def publish(self, bodies: list[bytes], batch: int) -> float:
        """``publish_async`` of each batch, then wait for every PubAck."""
        js = self.nc.jetstream()
        subject = f"{self.place.namespace}.person.{EVENT_TYPE}"
        started = time.perf_counter()
        for i in range(0, len(bodies), batch):
            futures = [
                await js.publish_async(subject, body, headers={"Nats-Msg-Id": f"raw-{started}-{j}"})
                for j, body in enumerate(bodies[i : i + batch], start=i)
            ]
            await asyncio.gather(*futures)
        took = time.perf_counter() - started
        return took


async def faststream_drain(place: Place, name: str, count: int) -> float:
    """FastStream's subscriber on the same queue (RabbitMQ) or durable consumer (NATS), a
    no-op handler taking the decoded body, acked by FastStream after it returns."""
    done = asyncio.Event()
    got = 0

    async def handle(body: dict[str, Any]) -> None:
        nonlocal got
        got += 1
        if got >= count:
            done.set()

    quiet = logging.getLogger("bench.faststream")
    quiet.setLevel(logging.CRITICAL)
    if place.backend == "amqp":
        from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

        broker: Any = RabbitBroker(
            place.broker_url.split("?")[0],
            default_channel=Channel(prefetch_count=PREFETCH),
            logger=quiet,
        )
        broker.subscriber(RabbitQueue(f"{place.namespace}.{name}", declare=False))(handle)
    else:
        from faststream.nats import JStream, NatsBroker, PullSub

        broker = NatsBroker(place.broker_url.split("/?")[0], logger=quiet)
        broker.subscriber(
            f"{place.namespace}.person.*",
            durable=name,
            stream=JStream(f"{place.namespace}_person", declare=False),
            pull_sub=PullSub(batch_size=PREFETCH, timeout=1.0),
        )(handle)
    await broker.connect()
    started = time.perf_counter()
    try:
        await broker.start()
        await until(done.is_set, 600)
        return time.perf_counter() - started
    finally:
        await broker.stop()


async def domain(place: Place) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    engine = create_engine(place.database_url)
    await create_tables(engine)
    return engine, session_factory(engine)


async def listener_throughput(
    place: Place, results: Results, count: int, rounds: int, timeout: float
) -> dict[str, float]:
    """Case 1 on one backend; returns events/s by variant (median of the rounds)."""
    names = ["tidings", "tidings-inbox", "raw"]
    if place.backend != "sqlite":
        names.append("faststream")
    subs = {name: subscription(name) for name in names}
    broker = await place.broker()
    engine, sessions = await domain(place)
    raw: Any = (
        RawAmqp(place)
        if place.backend == "amqp"
        else RawNats(place)
        if place.backend == "nats"
        else None
    )
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    try:
        await broker.declare(Topology.build(["person"], list(subs.values())))
        if raw is not None:
            await raw.__aenter__()
        drains: dict[str, Drain] = {
            "tidings": lambda n, c: run_listener(
                broker, subs[n], sessions, c, inbox=False, timeout=timeout
            ),
            "tidings-inbox": lambda n, c: run_listener(
                broker, subs[n], sessions, c, inbox=True, timeout=timeout
            ),
            "raw": (lambda n, c: broker_drain(broker, n, c)) if raw is None else raw.drain,
            "faststream": lambda n, c: faststream_drain(place, n, c),
        }
        for round_ in range(rounds):
            await publish_events(broker, "person", count)
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                with Clock() as clock:
                    took = await asyncio.wait_for(drains[name](name, count), timeout)
                rates[name].append(count / took)
                cpu[name].append(clock.cpu / count * 1e6)
    finally:
        if raw is not None:
            await raw.__aexit__(None, None, None)
        await broker.close()
        await engine.dispose()
    figures: dict[str, Any] = {name: median(values) for name, values in rates.items() if values}
    raw_label = {"amqp": "raw aio-pika", "nats": "raw nats-py", "sqlite": "SqliteBroker alone"}
    database = "SQLite" if place.backend == "sqlite" else "PostgreSQL"
    for name, rate in figures.items():
        label = {
            "tidings": "tidings listener, no inbox",
            "tidings-inbox": f"tidings listener, inbox ({database}, batch {INBOX_BATCH})",
            "raw": raw_label[place.backend],
            "faststream": "FastStream subscriber",
        }[name]
        results.add("listener", place.backend, label, rate, "events/s", f"median of {rounds}")
        results.add("listener", place.backend, f"{label}: CPU", median(cpu[name]), "µs/event")
    figures["cpu_us_per_event"] = {name: median(values) for name, values in cpu.items() if values}
    return figures


async def relay_throughput(
    place: Place, results: Results, count: int, rounds: int, timeout: float
) -> dict[str, float]:
    """Case 2 on one backend: outbox rows -> confirmed on the broker by the relay, beside the
    raw client publishing the same bodies with confirms, batches of the relay's size."""
    broker = await place.broker()
    engine, sessions = await domain(place)
    outbox = Outbox()
    relay = Relay(engine, broker, outbox=outbox, batch_size=PUBLISH_BATCH)
    raw: Any = (
        RawAmqp(place)
        if place.backend == "amqp"
        else RawNats(place)
        if place.backend == "nats"
        else None
    )
    rates: dict[str, list[float]] = {"relay": [], "raw": []}
    try:
        await broker.declare(Topology.build(["person"], [subscription("sink")]))
        if raw is not None:
            await raw.__aenter__()
        bodies = [event_message(e).body for e in person_events(count)]

        async def by_relay() -> float:
            events = person_events(count, prefix=f"{time.perf_counter()}-")
            for i in range(0, count, 100):
                async with sessions() as session, session.begin():
                    for event in events[i : i + 100]:
                        await outbox.add(session, "person", event)
            started = time.perf_counter()
            while await relay.run_once():
                pass
            return time.perf_counter() - started

        async def by_raw() -> float:
            if raw is not None:
                return float(await raw.publish(bodies, PUBLISH_BATCH))
            messages = [event_message(e) for e in person_events(count)]
            started = time.perf_counter()
            for i in range(0, count, PUBLISH_BATCH):
                await broker.publish("person", messages[i : i + PUBLISH_BATCH])
            return time.perf_counter() - started

        for round_ in range(rounds):
            pair = [("relay", by_relay), ("raw", by_raw)]
            for name, work in pair if round_ % 2 == 0 else pair[::-1]:
                rates[name].append(count / await asyncio.wait_for(work(), timeout))
            await broker_drain(broker, "sink", 2 * count)  # not timed: keeps the queue short
    finally:
        if raw is not None:
            await raw.__aexit__(None, None, None)
        await broker.close()
        await engine.dispose()
    figures = {name: median(values) for name, values in rates.items() if values}
    raw_label = {
        "amqp": "raw aio-pika, confirms",
        "nats": "raw nats-py publish_async + PubAcks",
        "sqlite": "SqliteBroker.publish alone",
    }[place.backend]
    results.add(
        "relay",
        place.backend,
        f"relay, outbox -> broker (batch {PUBLISH_BATCH})",
        figures["relay"],
        "events/s",
        f"median of {rounds}",
    )
    results.add(
        "relay", place.backend, raw_label, figures["raw"], "events/s", f"median of {rounds}"
    )
    return figures


async def fan_out(
    place: Place, results: Results, count: int, widths: list[int], timeout: float
) -> dict[int, dict[str, float]]:
    """Case 5 on one backend: one topic, K subscriptions. Publish cost (events/s offered to
    the topic, batches of 100) and delivered events/s (K listeners draining at once)."""
    broker = await place.broker()
    engine, sessions = await domain(place)
    figures: dict[int, dict[str, float]] = {}
    try:
        for width in widths:
            subs = [subscription(f"fan-{i}", in_flight=64, topic="fan") for i in range(width)]
            await broker.declare(Topology.build(["fan"], subs))
            messages = [event_message(e) for e in person_events(count, prefix=f"{width}-")]
            started = time.perf_counter()
            for i in range(0, count, 100):
                await broker.publish("fan", messages[i : i + 100])
            published = time.perf_counter() - started
            started = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        run_listener(broker, sub, sessions, count, inbox=False, timeout=timeout)
                        for sub in subs
                    )
                ),
                timeout,
            )
            delivered = time.perf_counter() - started
            figures[width] = {
                "publish_per_s": count / published,
                "delivered_per_s": width * count / delivered,
            }
            results.add(
                "fan-out",
                place.backend,
                f"{width:>2} subscriptions: publish",
                count / published,
                "events/s",
            )
            results.add(
                "fan-out",
                place.backend,
                f"{width:>2} subscriptions: delivered (all listeners)",
                width * count / delivered,
                "events/s",
            )
    finally:
        await broker.close()
        await engine.dispose()
    return figures
