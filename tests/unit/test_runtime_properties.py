"""The listener runtime, inbox and version guard together, on a real broker backend (the
in-process one, and the embedded SQLite broker): whatever the broker does (duplicates, any
order), however often a handler fails (retries with backoff), and wherever the process dies
(in a handler, or after its transaction committed and before the broker heard the ack),
the final state equals in-order, once-only delivery, and every event has exactly one
committed effect.

A crash is modelled in one process: :class:`Crash` (not an ``Exception``, so nothing in the
runtime catches it) is raised in a handler or instead of an ack; that worker dies with its
delivery unsettled, the runtime is stopped (the broker takes back what is unsettled) and a
new runtime takes over. Stopping lets the other work in hand finish rather than cancelling
it, as a cancelled SQLite transaction can keep the database locked while the process
lives.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.brokers import Broker, connect
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventData
from tidings.listener import Listener, ListenerRuntime, Outcome
from tidings.subsets import VersionGuard, apply_changes
from tidings.testing import drain, publish_events
from tidings.topology import Backoff, Subscription, Topology

FIELDS = ("firstName", "surname", "dateOfBirth")
PEOPLE = ("p1", "p2", "p3")
INITIAL = dict.fromkeys(FIELDS, "initial")
SUB = Subscription(
    name="copy-listener",
    topics=("person",),
    max_attempts=10,
    backoff=Backoff(initial=0.001, maximum=0.01, jitter=0),
    in_flight=4,
    lease_seconds=30,
)

tables = MetaData()
copies = Table(
    "person_copies",
    tables,
    Column("person_id", String(20), primary_key=True),
    Column("data", JSON, nullable=False),
)
effects = Table(
    "copy_effects",
    tables,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
)
guard = VersionGuard("copies.person")


class Crash(BaseException):
    """The process dies here."""


class Plan:
    """Where the current life of the process dies: at its ``handler``-th handler call or its
    ``ack``-th ack (1-based; 0 never)."""

    def __init__(self) -> None:
        self.handler = self.ack = 0
        self.handled = self.acked = 0
        self.crashed = False

    def live(self, handler: int = 0, ack: int = 0) -> None:
        self.handler, self.ack = handler, ack
        self.handled = self.acked = 0
        self.crashed = False

    def crash_if(self, due: bool) -> None:
        if due:
            self.crashed = True
            raise Crash


class _Delivery:
    def __init__(self, inner: Any, plan: Plan) -> None:
        self._inner, self._plan = inner, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def ack(self) -> None:
        self._plan.acked += 1
        self._plan.crash_if(self._plan.acked == self._plan.ack)
        await self._inner.ack()


class _Consumer:
    def __init__(self, inner: Any, plan: Plan) -> None:
        self._inner, self._plan = inner, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __aiter__(self) -> _Consumer:
        return self

    async def __anext__(self) -> _Delivery:
        return _Delivery(await self._inner.__anext__(), self._plan)


class CrashingBroker:
    """The broker as the runtime sees it, with acks that may never reach it."""

    def __init__(self, inner: Broker, plan: Plan) -> None:
        self._inner, self._plan = inner, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def consume(self, subscription: str, *, prefetch: int | None = None) -> _Consumer:
        return _Consumer(self._inner.consume(subscription, prefetch=prefetch), self._plan)


def listener(failures: Counter[str], plan: Plan) -> Listener:
    """Copies person fields through the guard and notes each effect; an event with failures
    left fails after writing (so its transaction rolls back), once per failure; the process
    dies in the handler when ``plan`` says."""
    app = Listener(SUB.name)

    @app.on("PersonUpdatedEvent")
    async def copy(event: Event, session: AsyncSession) -> None:
        plan.handled += 1
        await session.execute(insert(effects).values(event_id=str(event.id)))
        row = await session.execute(
            select(copies.c.data).where(copies.c.person_id == event.entity_id)
        )
        current = row.scalar_one_or_none() or dict(INITIAL)
        changes = event.event_data.new_data or {}
        assert event.entity_version is not None
        fresh = await guard.fresh(
            session,
            source_id=event.entity_id,
            holder_id="copies",
            version=event.entity_version,
            fields=changes,
        )
        data = apply_changes(current, changes, fresh)
        upsert = sqlite.insert(copies).values(person_id=event.entity_id, data=data)
        await session.execute(
            upsert.on_conflict_do_update(index_elements=["person_id"], set_={"data": data})
        )
        if failures[str(event.id)] > 0:
            failures[str(event.id)] -= 1
            raise RuntimeError("a failure that clears up")
        plan.crash_if(plan.handled == plan.handler)

    return app


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    events = []
    for person in PEOPLE:
        version = 0
        for _ in range(draw(st.integers(1, 5))):
            version += draw(st.integers(1, 2))
            changes = draw(
                st.dictionaries(st.sampled_from(FIELDS), st.text("xyz", max_size=2), min_size=1)
            )
            events.append(
                Event(
                    event_type="PersonUpdatedEvent",
                    source_domain="Person",
                    source_system="PersonAPI",
                    entity_id=person,
                    entity_version=version,
                    event_data=EventData(new_data=changes),
                )
            )
    return events


def in_order(events: list[Event]) -> dict[str, dict[str, Any]]:
    state = {p: dict(INITIAL) for p in PEOPLE if any(e.entity_id == p for e in events)}
    for e in sorted(events, key=lambda e: (e.entity_id, e.entity_version or 0)):
        state[e.entity_id].update(e.event_data.new_data or {})
    return state


async def live_until_crash(runtime: ListenerRuntime, plan: Plan) -> None:
    """Run ``runtime`` until the process dies as ``plan`` says (or nothing is left), then
    stop it: the broker takes back what is unsettled."""
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(10):
            while not plan.crashed:
                depth = await runtime.broker.depth(SUB.name)
                if depth.pending == 0 and runtime.in_flight == 0:
                    break
                await asyncio.sleep(0.002)
        # Work taken from the broker and not started dies with the process; the transactions
        # already running finish (the runtime's own queue is emptied so that the stop does
        # not wait for a worker that died).
        queue = runtime._queue
        while plan.crashed and not queue.empty():
            queue.get_nowait()
            queue.task_done()
    finally:
        runtime.stop()
        await task


async def deliver(
    broker_url: str,
    folder: Path,
    events: list[Event],
    deliveries: list[int],
    failures: Counter[str],
    crashes: list[tuple[str, int]],
    batch_size: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, int], Counter[Outcome]]:
    inner = await connect(broker_url)
    plan = Plan()
    broker = CrashingBroker(inner, plan)
    engine = create_engine(f"sqlite:///{folder}/listener.db")
    try:
        await inner.declare(Topology.build(["person"], [SUB]))
        await publish_events(inner, "person", [events[i] for i in deliveries])
        await create_tables(engine, tables)
        app = listener(failures, plan)
        outcomes: Counter[Outcome] = Counter()

        def runtime() -> ListenerRuntime:
            return ListenerRuntime(
                app,
                broker=broker,  # type: ignore[arg-type]
                subscription=SUB,
                sessions=session_factory(engine),
                batch_size=batch_size,
                shutdown_grace=10,
            )

        for where, at in crashes:
            plan.live(**{where: at})
            life = runtime()
            await live_until_crash(life, plan)
            outcomes += life.stats
        plan.live()
        outcomes += await drain(runtime(), timeout=30)
        async with session_factory(engine)() as s:
            rows = (await s.execute(select(copies))).all()
            counts = (
                await s.execute(
                    select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
                )
            ).all()
        return {r.person_id: r.data for r in rows}, {e: n for e, n in counts}, outcomes
    finally:
        await inner.close()
        await engine.dispose()


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    events = draw(histories())
    duplicates = draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    failing = draw(st.lists(st.sampled_from(events), max_size=4))
    return {
        "events": events,
        "deliveries": draw(st.permutations([*range(len(events)), *duplicates])),
        "failures": Counter({str(e.id): draw(st.integers(1, 3)) for e in failing}),
        "crashes": draw(
            st.lists(
                st.tuples(st.sampled_from(["handler", "ack"]), st.integers(1, len(events))),
                max_size=3,
            )
        ),
        "batch_size": draw(st.sampled_from([1, 4])),
    }


def check(scenario: dict[str, Any], broker_url: str) -> None:
    events: list[Event] = scenario["events"]
    failures = Counter(scenario["failures"])
    with tempfile.TemporaryDirectory() as folder:
        state, effect_counts, outcomes = asyncio.run(
            deliver(
                broker_url,
                Path(folder),
                events,
                scenario["deliveries"],
                failures,
                scenario["crashes"],
                scenario["batch_size"],
            )
        )
    assert outcomes[Outcome.DEAD_LETTERED] == 0
    assert state == in_order(events)
    assert effect_counts == {str(e.id): 1 for e in events}
    assert sum(failures.values()) == 0, "every planned failure happened"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_any_duplicates_order_failures_and_crashes_end_as_in_order_once_only_memory(
    scenario: dict[str, Any],
) -> None:
    check(scenario, "memory://")


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_any_duplicates_order_failures_and_crashes_end_as_in_order_once_only_sqlite(
    scenario: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory() as broker_folder:
        check(scenario, f"sqlite:///{broker_folder}/broker.db")
