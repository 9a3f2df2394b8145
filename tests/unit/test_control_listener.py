"""The pieces a listener follows the control store with: the version guard's stale note, the
in-flight slots, controls applied to a runtime, and its trace records in batches too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings.brokers.memory import MemoryBroker
from tidings.control import Controls, ControlStore, Recorder
from tidings.events import Event, EventData
from tidings.listener import Listener, ListenerRuntime, Slots, StaleNote
from tidings.subsets.guard import VersionGuard
from tidings.testing import drain, publish_events
from tidings.topology import Subscription, Topology

SUB = Subscription(name="copy", topics=("person",), in_flight=4, rate=50.0)


def person(version: int, **data: object) -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id="p1",
        entity_version=version,
        event_data=EventData(new_data=data),
    )


async def test_the_guard_notes_stale_and_fresh_fields_and_counts_the_stale_ones(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    guard = VersionGuard("unit.note")
    before = REGISTRY.get_sample_value("tidings_subset_stale_fields_total", {"subset": "unit.note"})
    async with sessions() as session, session.begin():
        await guard.fresh(session, source_id="p", holder_id="h", version=5, fields=["a", "b"])
        with StaleNote() as note:
            # a child task writes into the same note
            await asyncio.create_task(
                guard.fresh(session, source_id="p", holder_id="h", version=3, fields=["a"])
            )
            assert await guard.fresh(
                session, source_id="p", holder_id="h", version=6, fields=["b", "c"]
            ) == {"b", "c"}
        outside = await guard.fresh(session, source_id="p", holder_id="h", version=1, fields=["c"])
    assert outside == set()
    assert (note.stale, note.fresh) == ({"a"}, {"b", "c"})
    assert not note.changed_nothing
    after = REGISTRY.get_sample_value("tidings_subset_stale_fields_total", {"subset": "unit.note"})
    assert (after or 0) - (before or 0) == 2  # "a" inside the note, "c" outside it


def test_a_note_with_only_stale_fields_changed_nothing() -> None:
    note = StaleNote()
    assert not note.changed_nothing
    note.stale.add("surname")
    assert note.changed_nothing


async def test_slots_take_nothing_past_a_limit_that_changes_while_in_use() -> None:
    slots = Slots(2)
    slots.take()
    slots.take()
    assert slots.full
    waiter = asyncio.create_task(slots.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    slots.limit = 3
    await asyncio.wait_for(waiter, 1)
    slots.limit = 1
    slots.release()
    assert slots.full, "lowering the limit below what is held blocks until enough go"
    slots.release()
    assert not slots.full
    with pytest.raises(ValueError):
        slots.limit = 0


async def test_controls_override_the_declared_limits_and_none_restores_them(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    broker = MemoryBroker()
    runtime = ListenerRuntime(Listener("copy"), broker=broker, subscription=SUB, sessions=sessions)
    runtime.apply_controls(Controls("copy", paused=True, in_flight=9, rate=2.5))
    assert (runtime.paused, runtime.in_flight_limit, runtime.rate) == (True, 9, 2.5)
    runtime.apply_controls(Controls("copy"))
    assert (runtime.paused, runtime.in_flight_limit, runtime.rate) == (False, 4, 50.0)


@pytest.mark.parametrize("batch_size", [1, 8])
async def test_stale_events_and_stale_fields_are_traced_in_batches_too(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, batch_size: int
) -> None:
    broker = MemoryBroker()
    await broker.declare(Topology.build(["person"], [SUB.model_copy(update={"rate": None})]))
    guard = VersionGuard("unit.trace")
    listener = Listener("copy")

    @listener.on("PersonUpdatedEvent")
    async def copy(event: Event, session: AsyncSession) -> None:
        await guard.fresh(
            session,
            source_id=event.entity_id,
            holder_id="h",
            version=event.entity_version or 0,
            fields=event.event_data.new_data or {},
        )

    events = [person(3, surname="C"), person(2, surname="B", title="Ms"), person(1, surname="A")]
    await publish_events(broker, "person", events)
    async with ControlStore.open(f"sqlite:///{tmp_path}/tidings.db") as store:
        recorder = Recorder(store)
        runtime = ListenerRuntime(
            listener,
            broker=broker,
            subscription=SUB,
            sessions=sessions,
            batch_size=batch_size,
            recorder=recorder,
        )
        await drain(runtime)
        await recorder.flush()
        records = {r.event_id: r for r in await store.recent()}
    got = [(records[str(e.id)].outcome, records[str(e.id)].detail) for e in events]
    assert got == [("applied", None), ("applied", "surname"), ("stale", "surname")]
    assert {r.correlation_id for r in records.values()} == {e.correlation_id for e in events}
