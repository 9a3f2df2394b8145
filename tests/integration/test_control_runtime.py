"""Running listeners and relays follow the control store and report to it (on the embedded
SQLite broker, with SQLite databases)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tidings.brokers import Broker, connect
from tidings.brokers.base import Message
from tidings.control import ControlStore, Recorder, TraceRecord
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventData
from tidings.listener import DeadLetter, Listener, ListenerRuntime, Retry
from tidings.outbox import Outbox, Relay
from tidings.subsets import VersionGuard
from tidings.testing import publish_events
from tidings.topology import Backoff, Subscription, Topology

from ..conftest import require_service

SUB = Subscription(
    name="copy",
    topics=("ticks",),
    in_flight=8,
    max_attempts=3,
    backoff=Backoff(initial=0.05, maximum=0.1, jitter=0),
)
TOPOLOGY = Topology.build(["ticks"], [SUB])
INTERVAL = 0.2

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("at", Float, nullable=False),
)


def ticks(n: int, *, prefix: str = "e") -> list[Event]:
    return [
        Event(
            event_type="Tick",
            source_domain="Clock",
            source_system="ClockAPI",
            entity_id=f"{prefix}{i}",
        )
        for i in range(n)
    ]


@dataclass
class Setup:
    broker: Broker
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ControlStore
    """The listener's own store object."""
    operator: ControlStore
    """Another store object on the same database: what an operator's command uses."""
    recorder: Recorder
    runtimes: list[tuple[ListenerRuntime, asyncio.Task[None]]] = field(default_factory=list)

    def start(self, listener: Listener, **kw: object) -> ListenerRuntime:
        options: dict[str, object] = {"control_interval": INTERVAL, **kw}
        runtime = ListenerRuntime(
            listener,
            broker=self.broker,
            subscription=SUB,
            sessions=self.sessions,
            control=self.store,
            recorder=self.recorder,
            **options,  # type: ignore[arg-type]
        )
        self.runtimes.append((runtime, asyncio.create_task(runtime.run())))
        return runtime

    async def stop_all(self) -> None:
        for runtime, task in self.runtimes:
            runtime.stop()
            await task
        self.runtimes.clear()

    async def applied(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
            )
            return {event_id: n for event_id, n in rows.all()}

    async def count(self) -> int:
        return sum((await self.applied()).values())

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.count() < count:
                await asyncio.sleep(0.02)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    broker = await connect(f"sqlite:///{tmp_path}/broker.db")
    await broker.declare(TOPOLOGY)
    engine = create_engine(f"sqlite:///{tmp_path}/domain.db")
    await create_tables(engine, effects_metadata)
    control = f"sqlite:///{tmp_path}/tidings.db"
    async with ControlStore.open(control) as store, ControlStore.open(control) as operator:
        recorder = Recorder(store, interval=0.1)
        recorder.start()
        s = Setup(broker, engine, session_factory(engine), store, operator, recorder)
        try:
            yield s
        finally:
            await s.stop_all()
            await recorder.close()
            await broker.close()
            await engine.dispose()


def recording(delay: float = 0.0) -> Listener:
    """Records one effect row per applied event, with the time it was applied."""
    listener = Listener("copy")

    @listener.on("Tick")
    async def apply(event: Event, session: AsyncSession) -> None:
        if delay:
            await asyncio.sleep(delay)
        await session.execute(insert(effects).values(event_id=str(event.id), at=time.monotonic()))

    return listener


async def test_pause_set_through_the_store_stops_deliveries_and_resume_restarts_them(
    setup: Setup,
) -> None:
    runtime = setup.start(recording())
    first = ticks(20, prefix="a")
    await publish_events(setup.broker, "ticks", first)
    await setup.wait_for(20)

    await setup.operator.set_controls("copy", paused=True)
    paused_at = time.monotonic()
    await eventually(lambda: _true(runtime.paused), timeout=2.0)
    assert time.monotonic() - paused_at < 2.0
    held = ticks(30, prefix="b")
    await publish_events(setup.broker, "ticks", held)
    await asyncio.sleep(1.0)
    assert await setup.count() == 20, "a paused listener took deliveries"
    assert (await setup.broker.depth("copy")).ready == 30

    await setup.operator.set_controls("copy", paused=False)
    resumed_at = time.monotonic()
    await setup.wait_for(50, timeout=10)
    async with setup.engine.connect() as conn:
        first_after = await conn.scalar(select(func.min(effects.c.at)).where(effects.c.n > 20))
    assert first_after is not None and first_after - resumed_at < 2.0
    await setup.stop_all()
    assert await setup.applied() == {str(e.id): 1 for e in first + held}


async def test_a_pause_set_while_the_listener_was_down_holds_from_the_first_delivery(
    setup: Setup,
) -> None:
    await setup.operator.set_controls("copy", paused=True)
    events = ticks(10)
    await publish_events(setup.broker, "ticks", events)
    runtime = setup.start(recording())
    await asyncio.sleep(1.0)
    assert await setup.count() == 0
    assert runtime.stats.total() == 0
    [beat] = await setup.operator.listeners()
    assert beat.paused and beat.subscription == "copy"

    await setup.operator.set_controls("copy", paused=False)
    await setup.wait_for(10)
    await setup.stop_all()
    assert await setup.applied() == {str(e.id): 1 for e in events}


async def test_rate_set_through_the_store_limits_throughput_and_lifting_it_restores_it(
    setup: Setup,
) -> None:
    await setup.operator.set_controls("copy", rate=20)
    events = ticks(80)
    await publish_events(setup.broker, "ticks", events)
    start = time.monotonic()
    setup.start(recording())
    await setup.wait_for(30)
    took = time.monotonic() - start
    # A burst of 2 (a tenth of the rate), then 20 per second: at least 1.4 s for 30 events.
    assert took >= 1.3, f"30 events in {took:.2f}s at 20/s"
    assert await setup.count() < 60

    await setup.operator.set_controls("copy", rate=None)
    lifted = time.monotonic()
    await setup.wait_for(80, timeout=10)
    # The other 50 would take 2.5 s at 20/s.
    assert time.monotonic() - lifted < 2.0
    await setup.stop_all()
    assert await setup.applied() == {str(e.id): 1 for e in events}


class Concurrency:
    """The most handlers running at once since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def reset(self) -> None:
        self.most = self.now

    def listener(self, delay: float) -> Listener:
        listener = Listener("copy")

        @listener.on("Tick")
        async def apply(event: Event, session: AsyncSession) -> None:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                await asyncio.sleep(delay)
            finally:
                self.now -= 1
            await session.execute(
                insert(effects).values(event_id=str(event.id), at=time.monotonic())
            )

        return listener


async def test_in_flight_set_through_the_store_lowers_and_raises_concurrency_while_running(
    setup: Setup,
) -> None:
    # Without the inbox, a delivery handled twice would show as two effect rows.
    concurrency = Concurrency()
    runtime = setup.start(concurrency.listener(0.05), inbox=False)
    events = ticks(600)
    await publish_events(setup.broker, "ticks", events)
    await setup.wait_for(40)
    assert concurrency.most == SUB.in_flight

    await setup.operator.set_controls("copy", in_flight=2)
    await eventually(lambda: _true(runtime.in_flight_limit == 2), timeout=2.0)
    await asyncio.sleep(0.2)  # what was in hand beyond the new limit finishes
    concurrency.reset()
    done = await setup.count()
    await setup.wait_for(done + 30)
    assert concurrency.most == 2

    # Beyond the declared in-flight (the consumer's prefetch): a consumer with more room.
    await setup.operator.set_controls("copy", in_flight=24)
    await eventually(lambda: _true(runtime.in_flight_limit == 24), timeout=2.0)
    concurrency.reset()
    done = await setup.count()
    await setup.wait_for(done + 150)
    assert concurrency.most > SUB.in_flight
    assert concurrency.most <= 24

    await setup.wait_for(len(events), timeout=30)
    await asyncio.sleep(0.3)
    await setup.stop_all()
    assert await setup.applied() == {str(e.id): 1 for e in events}
    depth = await setup.broker.depth("copy")
    assert depth.pending == 0 and depth.dead == 0


async def test_heartbeats_report_each_listener_until_it_stops(setup: Setup) -> None:
    runtime = setup.start(recording(delay=0.01))
    events = ticks(100)
    await publish_events(setup.broker, "ticks", events)
    await setup.wait_for(100)

    async def settled_all() -> bool:
        beats = await setup.operator.listeners()
        return len(beats) == 1 and beats[0].settled == 100

    await eventually(settled_all, timeout=3.0)
    [beat] = await setup.operator.listeners()
    assert beat.subscription == "copy" and not beat.paused
    assert beat.in_flight == 0
    assert beat.per_second > 0
    assert runtime.stats.total() == 100

    await setup.stop_all()
    assert await setup.operator.listeners() == []
    assert await setup.applied() == {str(e.id): 1 for e in events}


async def test_every_settle_and_every_publish_is_traced(setup: Setup) -> None:
    guard = VersionGuard("copy.person")
    asked: dict[str, int] = {}
    listener = Listener("copy")

    @listener.on("Tick")
    async def apply(event: Event, session: AsyncSession) -> None:
        asked[event.entity_id] = asked.get(event.entity_id, 0) + 1
        if event.entity_id == "flaky" and asked["flaky"] == 1:
            raise Retry("not yet")
        if event.entity_id == "poison":
            raise DeadLetter("cannot be applied")
        if event.entity_id.startswith("person"):
            await guard.fresh(
                session,
                source_id=event.entity_id,
                holder_id="h",
                version=event.entity_version or 0,
                fields=event.event_data.new_data or {},
            )
        await session.execute(insert(effects).values(event_id=str(event.id), at=time.monotonic()))

    def person(version: int, **data: object) -> Event:
        return Event(
            event_type="Tick",
            source_domain="Clock",
            source_system="ClockAPI",
            entity_id="person1",
            entity_version=version,
            event_data=EventData(new_data=data),
        )

    newest, older, oldest = (
        person(3, surname="C"),
        person(2, surname="B", title="Ms"),
        person(1, surname="A"),
    )
    plain, flaky, poison = (
        Event(event_type="Tick", source_domain="Clock", source_system="ClockAPI", entity_id=e)
        for e in ("plain", "flaky", "poison")
    )
    other = Event(event_type="Tock", source_domain="Clock", source_system="ClockAPI", entity_id="x")
    published = [plain, flaky, poison, other, newest, older, oldest]

    outbox = Outbox()
    async with setup.sessions() as session, session.begin():
        for event in published:
            await outbox.add(session, "ticks", event)
    relay = Relay(setup.engine, setup.broker, outbox=outbox, recorder=setup.recorder)
    assert await relay.run_once() == len(published)
    await publish_events(setup.broker, "ticks", [plain])  # a duplicate
    garbage = Message(
        id="m1", event_type="Tick", key="k", body=b"\xff", headers={"correlation-id": "c-bad"}
    )
    await setup.broker.publish("ticks", [garbage])

    setup.start(listener)
    await setup.wait_for(5)  # plain, flaky, newest, older, oldest

    async def all_settled() -> bool:
        depth = await setup.broker.depth("copy")
        return depth.pending == 0

    await eventually(all_settled)
    await setup.stop_all()
    await setup.recorder.flush()

    by_event: dict[str, list[TraceRecord]] = {}
    for record in reversed(await setup.operator.recent(limit=100)):
        by_event.setdefault(record.event_id, []).append(record)

    def steps(event: Event) -> list[tuple[str, int | None, str | None]]:
        return [(r.outcome, r.attempt, r.detail) for r in by_event[str(event.id)]]

    assert steps(plain) == [("published", None, None), ("applied", 1, None), ("duplicate", 1, None)]
    assert steps(flaky) == [
        ("published", None, None),
        ("retried", 1, "not yet"),
        ("applied", 2, None),
    ]
    assert steps(poison) == [
        ("published", None, None),
        ("dead_lettered", 1, "cannot be applied"),
    ]
    assert steps(other) == [("published", None, None), ("unhandled", 1, None)]
    assert steps(newest) == [("published", None, None), ("applied", 1, None)]
    assert steps(older) == [("published", None, None), ("applied", 1, "surname")]
    assert steps(oldest) == [("published", None, None), ("stale", 1, "surname")]
    [bad] = by_event["m1"]
    assert (bad.outcome, bad.correlation_id) == ("dead_lettered", "c-bad")
    assert bad.detail is not None and bad.detail.startswith("undecodable")

    trace = await setup.operator.trace(plain.correlation_id)
    assert [r.outcome for r in trace] == ["published", "applied", "duplicate"]
    assert trace[0].topic == "ticks" and trace[0].subscription is None
    assert {r.subscription for r in trace[1:]} == {"copy"}
    assert {(r.event_type, r.entity_id) for r in trace} == {("Tick", "plain")}


async def test_unreadable_store_keeps_the_last_controls_and_the_listener_working(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await setup.operator.set_controls("copy", rate=1000)
    runtime = setup.start(recording())
    await eventually(lambda: _true(runtime.rate == 1000), timeout=2.0)
    async with setup.store.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE tidings_controls RENAME TO hidden")
    await asyncio.sleep(4 * INTERVAL)
    events = ticks(20)
    await publish_events(setup.broker, "ticks", events)
    await setup.wait_for(20)
    assert runtime.rate == 1000
    warnings = [r for r in caplog.records if "control store" in r.getMessage()]
    assert len(warnings) == 1, "warnings about the store are not rate limited"

    async with setup.store.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE hidden RENAME TO tidings_controls")
    await setup.operator.set_controls("copy", rate=None)
    await eventually(lambda: _true(runtime.rate is None), timeout=2.0)
    await setup.stop_all()
    assert await setup.applied() == {str(e.id): 1 for e in events}


async def _true(value: bool) -> bool:
    return value


@pytest.mark.rabbitmq
async def test_in_flight_raised_past_the_prefetch_on_rabbitmq_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    url = f"amqp://guest:guest@127.0.0.1:5672/?namespace=ctl{time.time_ns()}"
    broker = await connect(url)
    engine = create_engine(f"sqlite:///{tmp_path}/domain.db")
    await create_tables(engine, effects_metadata)
    control = f"sqlite:///{tmp_path}/tidings.db"
    try:
        await broker.declare(TOPOLOGY)
        async with ControlStore.open(control) as store, ControlStore.open(control) as operator:
            s = Setup(broker, engine, session_factory(engine), store, operator, Recorder(store))
            concurrency = Concurrency()
            await operator.set_controls("copy", in_flight=2)
            runtime = s.start(concurrency.listener(0.05), inbox=False)
            events = ticks(300)
            await publish_events(broker, "ticks", events)
            await s.wait_for(30)
            assert concurrency.most == 2
            await operator.set_controls("copy", in_flight=20)
            await eventually(lambda: _true(runtime.in_flight_limit == 20), timeout=2.0)
            concurrency.reset()
            await s.wait_for(len(events), timeout=30)
            assert concurrency.most > SUB.in_flight
            await asyncio.sleep(0.5)
            await s.stop_all()
            assert await s.applied() == {str(e.id): 1 for e in events}
    finally:
        if hasattr(broker, "delete_namespace"):
            await broker.delete_namespace()
        await broker.close()
        await engine.dispose()


RUN_LISTENER = """
import sys
from sqlalchemy import MetaData
from tidings.config import Settings
from tidings.listener import Listener
from tidings.runner import run_listener
from tidings.topology import Subscription

listener = Listener("copy")

@listener.on("Tick")
async def apply(event, session):
    print("applied", event.id, flush=True)

sub = Subscription(name="copy", topics=("ticks",), in_flight=4)
import asyncio
asyncio.run(run_listener(lambda: listener, sub, settings=Settings.from_env(), domain="copy",
                         metadata=MetaData()))
"""


async def test_run_listener_declares_follows_beats_and_traces_through_the_control_store(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "TIDINGS_HOME": str(tmp_path), "TIDINGS_CONTROL_INTERVAL": "0.2"}
    env.pop("TIDINGS_BROKER", None)
    env.pop("TIDINGS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_LISTENER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        async with ControlStore.open(f"sqlite:///{tmp_path}/tidings.db") as operator:
            await eventually(lambda: _has_listener(operator), timeout=30)
            assert [s.name for s in await operator.subscriptions()] == ["copy"]
            broker = await connect(f"sqlite:///{tmp_path}/broker.db")
            try:
                events = ticks(5)
                await publish_events(broker, "ticks", events)

                async def traced() -> bool:
                    return len(await operator.recent()) == 5

                await eventually(traced, timeout=10)
                assert {r.outcome for r in await operator.recent()} == {"applied"}
                await operator.set_controls("copy", paused=True)

                async def paused() -> bool:
                    return [b.paused for b in await operator.listeners()] == [True]

                await eventually(paused, timeout=5)
                await publish_events(broker, "ticks", ticks(3, prefix="late"))
                await asyncio.sleep(0.6)
                assert (await broker.depth("copy")).ready == 3
            finally:
                await broker.close()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
            assert await operator.listeners() == []
        assert proc.stdout is not None
        assert sorted(proc.stdout.read().split()[1::2]) == sorted(str(e.id) for e in events)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


async def _has_listener(store: ControlStore) -> bool:
    try:
        return bool(await store.listeners())
    except Exception:  # noqa: BLE001 - the process may still be creating the tables
        return False
