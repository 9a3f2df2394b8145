from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from pydantic import BaseModel
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings.brokers.base import Depth, Message
from tidings.brokers.memory import MemoryBroker
from tidings.errors import BrokerUnavailable, ConfigurationError
from tidings.events import Event, EventData
from tidings.events.catalog import EventCatalog
from tidings.listener import DeadLetter, Listener, ListenerRuntime, Outcome, Retry
from tidings.listener.inbox import inbox_table
from tidings.testing import drain, event_message, publish_events
from tidings.topology import Backoff, Subscription, Topology

from .conftest import effects

SUB = Subscription(
    name="tenure-listener",
    topics=("person",),
    max_attempts=3,
    backoff=Backoff(initial=0.01, maximum=0.05, jitter=0),
    in_flight=4,
)


def person_event(entity: str = "p1", version: int = 1, **data: object) -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id=entity,
        entity_version=version,
        event_data=EventData(old_data={}, new_data=data or {"firstName": "Ann"}),
    )


@pytest.fixture(params=[1, 8], ids=["batch1", "batch8"])
def batch_size(request: pytest.FixtureRequest) -> int:
    """Every runtime test runs with a transaction per event and with batches."""
    return int(request.param)


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker()
    await broker.declare(Topology.build(["person"], [SUB]))
    yield broker
    await broker.close()


async def record_effect(event: Event, session: AsyncSession) -> None:
    await session.execute(insert(effects).values(event_id=str(event.id), entity_id=event.entity_id))


def runtime_for(
    listener: Listener,
    broker: MemoryBroker,
    sessions: async_sessionmaker[AsyncSession],
    batch_size: int = 1,
    **kw: object,
) -> ListenerRuntime:
    return ListenerRuntime(
        listener,
        broker=broker,
        subscription=SUB,
        sessions=sessions,
        batch_size=batch_size,
        **kw,  # type: ignore[arg-type]
    )


async def effect_counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(
            select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
        )
        return {event_id: n for event_id, n in rows.all()}


async def test_each_event_is_applied_once_even_when_published_twice(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    events = [person_event(f"p{i}") for i in range(20)]
    await publish_events(broker, "person", events)
    await publish_events(broker, "person", events[:5])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert stats[Outcome.APPLIED] == 20
    assert stats[Outcome.DUPLICATE] == 5
    assert await effect_counts(sessions) == {str(e.id): 1 for e in events}


async def test_unhandled_types_are_acknowledged_and_counted_never_dead_lettered(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    other = person_event().model_copy(update={"event_type": "PersonCreatedEvent"})
    await publish_events(broker, "person", [other, person_event()])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert stats[Outcome.UNHANDLED] == 1 and stats[Outcome.APPLIED] == 1
    assert (await broker.depth("tenure-listener")).dead == 0


async def test_undecodable_message_is_dead_lettered_at_once_with_the_reason(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    garbage = Message(id="m1", event_type="PersonUpdatedEvent", key="p1", body=b"\xff{not json")
    await broker.publish("person", [garbage])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert stats[Outcome.DEAD_LETTERED] == 1
    [dead] = await broker.dead_letters("tenure-listener")
    assert dead.message.body == garbage.body
    assert dead.attempts == 1
    assert dead.reason.startswith("undecodable:")


async def test_schema_violation_is_dead_lettered_at_once_and_others_flow(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    class Changes(BaseModel):
        firstName: str | None = None  # noqa: N815 - wire name

    catalog = EventCatalog()
    catalog.register("PersonUpdatedEvent", "v1", data=Changes)
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    bad = person_event("p1", firstName=42)
    good = person_event("p2", firstName="Bo")
    await publish_events(broker, "person", [bad, good])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size, catalog=catalog))
    assert stats[Outcome.DEAD_LETTERED] == 1 and stats[Outcome.APPLIED] == 1
    [dead] = await broker.dead_letters("tenure-listener")
    assert dead.message.id == str(bad.id) and "firstName" in dead.reason
    assert await effect_counts(sessions) == {str(good.id): 1}


async def test_failing_handler_is_retried_then_dead_lettered_with_attempts(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    calls: list[int] = []
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def always_fails(event: Event, session: AsyncSession) -> None:
        await record_effect(event, session)
        calls.append(1)
        raise RuntimeError("tenure store is down")

    event = person_event()
    await publish_events(broker, "person", [event])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert len(calls) == SUB.max_attempts
    assert stats[Outcome.RETRIED] == SUB.max_attempts - 1
    assert stats[Outcome.DEAD_LETTERED] == 1
    [dead] = await broker.dead_letters("tenure-listener")
    assert dead.attempts == SUB.max_attempts
    assert "RuntimeError: tenure store is down" in dead.reason
    assert await effect_counts(sessions) == {}, "failed attempts must leave no effect"


async def test_a_failure_that_clears_up_applies_the_event_exactly_once(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    failures = {"left": 2}
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def flaky(event: Event, session: AsyncSession) -> None:
        await record_effect(event, session)
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("blip")

    event = person_event()
    await publish_events(broker, "person", [event])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert stats[Outcome.RETRIED] == 2 and stats[Outcome.APPLIED] == 1
    assert await effect_counts(sessions) == {str(event.id): 1}
    async with sessions() as session:
        inbox_rows = (await session.execute(select(func.count()).select_from(inbox_table))).scalar()
    assert inbox_rows == 1


async def test_handler_outcomes_retry_after_and_dead_letter_are_honoured(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    seen: list[str] = []
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def decide(event: Event, session: AsyncSession) -> None:
        seen.append(event.entity_id)
        if event.entity_id == "refuse":
            raise DeadLetter("person is not ours")
        if event.entity_id == "later" and seen.count("later") == 1:
            raise Retry("not yet", after=0.05)

    await publish_events(broker, "person", [person_event("refuse"), person_event("later")])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert seen.count("refuse") == 1 and seen.count("later") == 2
    assert stats[Outcome.DEAD_LETTERED] == 1 and stats[Outcome.APPLIED] == 1
    [dead] = await broker.dead_letters("tenure-listener")
    assert dead.reason == "person is not ours"


async def test_paused_listener_takes_nothing_until_resumed(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    runtime = runtime_for(listener, broker, sessions, batch_size)
    runtime.pause()
    task = asyncio.create_task(runtime.run())
    await publish_events(broker, "person", [person_event(f"p{i}") for i in range(5)])
    await asyncio.sleep(0.2)
    assert runtime.stats[Outcome.APPLIED] == 0
    assert (await broker.depth("tenure-listener")).ready == 5
    runtime.resume()
    async with asyncio.timeout(5):
        while runtime.stats[Outcome.APPLIED] < 5:
            await asyncio.sleep(0.01)
    runtime.stop()
    await task


async def test_in_flight_limit_bounds_concurrent_handlers_and_is_reached(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    running = {"now": 0, "max": 0}
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def slow(event: Event, session: AsyncSession) -> None:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1

    await publish_events(broker, "person", [person_event(f"p{i}") for i in range(40)])
    stats = await drain(runtime_for(listener, broker, sessions, inbox=False))
    assert stats[Outcome.APPLIED] == 40
    assert running["max"] == SUB.in_flight


async def test_stop_lets_in_flight_work_finish_and_loses_nothing(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    started = asyncio.Event()
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def slow(event: Event, session: AsyncSession) -> None:
        started.set()
        await asyncio.sleep(0.1)
        await record_effect(event, session)

    events = [person_event(f"p{i}") for i in range(10)]
    await publish_events(broker, "person", events)
    runtime = runtime_for(listener, broker, sessions, batch_size)
    task = asyncio.create_task(runtime.run())
    await started.wait()
    runtime.stop()
    await asyncio.wait_for(task, 5)
    applied_first = runtime.stats[Outcome.APPLIED]
    assert 1 <= applied_first <= SUB.in_flight
    rest = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert applied_first + rest[Outcome.APPLIED] == 10
    assert await effect_counts(sessions) == {str(e.id): 1 for e in events}


async def test_entity_event_envelope_is_understood_too(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    event = person_event()
    await broker.publish("person", [event_message(event, "entity-event")])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size))
    assert stats[Outcome.APPLIED] == 1
    assert await effect_counts(sessions) == {str(event.id): 1}


def test_runtime_refuses_a_listener_for_another_subscription(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(ConfigurationError, match="subscription"):
        ListenerRuntime(
            Listener("other"), broker=MemoryBroker(), subscription=SUB, sessions=sessions
        )


async def test_one_failing_event_in_a_batch_does_not_hold_back_or_double_the_others(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def fails_for_p5(event: Event, session: AsyncSession) -> None:
        await record_effect(event, session)
        if event.entity_id == "p5":
            raise RuntimeError("bad data for p5")

    events = [person_event(f"p{i}") for i in range(10)]
    await publish_events(broker, "person", events + events[:3])
    stats = await drain(runtime_for(listener, broker, sessions, batch_size=16))
    assert stats[Outcome.APPLIED] == 9
    assert stats[Outcome.DUPLICATE] == 3
    assert stats[Outcome.DEAD_LETTERED] == 1
    assert await effect_counts(sessions) == {str(e.id): 1 for e in events if e.entity_id != "p5"}


def test_batch_size_below_one_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        runtime_for(Listener("tenure-listener"), MemoryBroker(), sessions, batch_size=0)


async def test_rate_limit_paces_the_listener_without_letting_leases_run_out(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    throttled = SUB.model_copy(update={"rate": 20.0, "lease_seconds": 0.3, "in_flight": 16})
    broker = MemoryBroker()
    await broker.declare(Topology.build(["person"], [throttled]))
    listener = Listener("tenure-listener")
    listener.on("PersonUpdatedEvent")(record_effect)
    events = [person_event(f"p{i}") for i in range(15)]
    await publish_events(broker, "person", events)
    runtime = ListenerRuntime(listener, broker=broker, subscription=throttled, sessions=sessions)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stats = await drain(runtime)
    # 15 events at 20/s with a burst of 2: at least 0.6 s, however fast the machine.
    assert loop.time() - start >= 0.6
    assert stats == {Outcome.APPLIED: 15}, "a lease ran out while an event waited for the limit"
    assert await effect_counts(sessions) == {str(e.id): 1 for e in events}
    await broker.close()


async def test_a_handler_that_touches_no_database_costs_no_session(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    made: list[AsyncSession] = []

    def counted() -> AsyncSession:
        made.append(sessions())
        return made[-1]

    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def only_some_write(event: Event, session: AsyncSession) -> None:
        if event.entity_id == "writer":
            await record_effect(event, session)

    writer = person_event("writer")
    await publish_events(broker, "person", [person_event("quiet1"), writer, person_event("quiet2")])
    factory = cast(async_sessionmaker[AsyncSession], counted)
    stats = await drain(runtime_for(listener, broker, factory, inbox=False))
    assert stats == {Outcome.APPLIED: 3}
    assert len(made) == 1, "only the handler that used its session had one made"
    assert await effect_counts(sessions) == {str(writer.id): 1}


async def test_events_that_come_while_a_batch_commits_gather_into_one_transaction(
    broker: MemoryBroker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    held, release = asyncio.Event(), asyncio.Event()
    seen: dict[str, AsyncSession] = {}
    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def note_session(event: Event, session: AsyncSession) -> None:
        if event.entity_id == "first":
            held.set()
            await release.wait()
        seen[event.entity_id] = session

    # in_flight 4, batches of 2: two workers. While the first holds its transaction open,
    # the next events come one by one; they wait for each other, not each for a worker.
    runtime = runtime_for(listener, broker, sessions, batch_size=2)
    task = asyncio.create_task(runtime.run())
    await publish_events(broker, "person", [person_event("first")])
    async with asyncio.timeout(5):
        await held.wait()
    for entity in ("second", "third"):
        await publish_events(broker, "person", [person_event(entity)])
        await asyncio.sleep(0.05)
    release.set()
    async with asyncio.timeout(5):
        while runtime.stats[Outcome.APPLIED] < 3:
            await asyncio.sleep(0.01)
    runtime.stop()
    await task
    assert seen["second"] is seen["third"]
    assert seen["first"] is not seen["second"]


class StubbornDepthBroker(MemoryBroker):
    """Its depth reads hang, and end by themselves when cancelled (as some clients do)."""

    def __init__(self, *, then_raise: bool) -> None:
        super().__init__()
        self.then_raise = then_raise
        self.reads = 0

    async def depth(self, subscription: str) -> Depth:
        self.reads += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self.then_raise:
                raise BrokerUnavailable("the channel closed") from None
        return await super().depth(subscription)


@pytest.mark.parametrize("then_raise", [True, False], ids=["raises", "returns"])
async def test_stop_returns_though_a_broker_call_swallowed_its_cancellation(
    sessions: async_sessionmaker[AsyncSession], then_raise: bool
) -> None:
    broker = StubbornDepthBroker(then_raise=then_raise)
    await broker.declare(Topology.build(["person"], [SUB]))
    runtime = runtime_for(Listener("tenure-listener"), broker, sessions)
    task = asyncio.create_task(runtime.run())
    async with asyncio.timeout(5):
        while not broker.reads:
            await asyncio.sleep(0.01)
    runtime.stop()
    async with asyncio.timeout(5):
        await task
    await broker.close()
