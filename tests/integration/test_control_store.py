"""The control store on both databases it runs on: SQLite (the embedded default) and
PostgreSQL (a schema of the deployment's shared database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tidings.config import Settings
from tidings.control import (
    UNSET,
    ControlStore,
    ListenerBeat,
    Recorder,
    TraceRecord,
    process_name,
)
from tidings.db import create_engine
from tidings.errors import ConfigurationError
from tidings.topology import Subscription, Topology

from ..conftest import require_service

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield Settings(home=tmp_path, broker_url="memory://").control_database_url
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    prefix = f"test_{uuid.uuid4().hex[:12]}"
    yield Settings(
        home=tmp_path, broker_url="memory://", database_url=f"{PG}?schema={prefix}"
    ).control_database_url
    admin = create_engine(PG)
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}_tidings" CASCADE'))
    await admin.dispose()


def record(correlation: str, outcome: str, **kw: object) -> TraceRecord:
    return TraceRecord(
        correlation_id=correlation,
        event_id=str(uuid.uuid4()),
        event_type="PersonUpdatedEvent",
        entity_id="p-1",
        outcome=outcome,
        process=process_name(),
        at=datetime.now(UTC),
        **kw,  # type: ignore[arg-type]
    )


async def test_declared_subscriptions_are_listed_and_replaced(url: str) -> None:
    async with ControlStore.open(url) as store:
        first = Subscription(name="b-sub", topics=["person"], in_flight=4)
        await store.declared(
            Topology.build(["person"], [first, Subscription(name="a-sub", topics=["person"])])
        )
        await store.declared(
            Topology.build(["person"], [first.model_copy(update={"in_flight": 9})])
        )
        listed = await store.subscriptions()
        assert [s.name for s in listed] == ["a-sub", "b-sub"]
        assert listed[1].in_flight == 9
        assert await store.subscription("b-sub") == listed[1]
        assert await store.subscription("nope") is None


async def test_controls_change_only_what_is_given_and_survive_reopening(url: str) -> None:
    async with ControlStore.open(url) as store:
        fresh = await store.controls("tenure-listener")
        assert (fresh.paused, fresh.in_flight, fresh.rate, fresh.updated_at) == (
            False,
            None,
            None,
            None,
        )
        await store.set_controls("tenure-listener", paused=True)
        now = await store.set_controls("tenure-listener", in_flight=3, rate=2.5)
        assert (now.paused, now.in_flight, now.rate) == (True, 3, 2.5)
        now = await store.set_controls("tenure-listener", rate=None, paused=UNSET)
        assert (now.paused, now.in_flight, now.rate) == (True, 3, None)
    async with ControlStore.open(url) as again:
        kept = await again.controls("tenure-listener")
        assert (kept.paused, kept.in_flight) == (True, 3)
        assert set(await again.all_controls()) == {"tenure-listener"}


@pytest.mark.parametrize(
    "limits", [{"in_flight": 0}, {"in_flight": 10_001}, {"rate": 0.0}, {"rate": -1.0}]
)
async def test_controls_refuse_limits_out_of_range(url: str, limits: dict[str, float]) -> None:
    async with ControlStore.open(url) as store:
        with pytest.raises(ConfigurationError):
            await store.set_controls("s", **limits)  # type: ignore[arg-type]
        assert (await store.controls("s")).updated_at is None


async def test_heartbeats_replace_each_other_and_age_out(url: str) -> None:
    async with ControlStore.open(url) as store:
        old = datetime.now(UTC) - timedelta(minutes=5)
        await store.beat(ListenerBeat("s", "host:1", 1, 10, 2.0, False, datetime.now(UTC)))
        await store.beat(ListenerBeat("s", "host:1", 4, 30, 5.0, True, datetime.now(UTC)))
        await store.beat(ListenerBeat("s", "host:2", 0, 0, 0.0, False, old))
        alive = await store.listeners(within=10)
        assert [(b.process, b.in_flight, b.settled, b.paused) for b in alive] == [
            ("host:1", 4, 30, True)
        ]
        await store.gone("s", "host:1")
        assert [b.process for b in await store.listeners(within=3600)] == ["host:2"]


async def test_trace_keeps_order_per_correlation_and_prunes_old_records(url: str) -> None:
    async with ControlStore.open(url) as store:
        await store.record(
            [
                record("c-1", "published", topic="person"),
                record("c-2", "published", topic="person"),
                record(
                    "c-1", "retried", subscription="tenure-listener", attempt=1, detail="x" * 5000
                ),
                record("c-1", "applied", subscription="tenure-listener", attempt=2),
            ]
        )
        steps = await store.trace("c-1")
        assert [(s.outcome, s.topic, s.subscription, s.attempt) for s in steps] == [
            ("published", "person", None, None),
            ("retried", None, "tenure-listener", 1),
            ("applied", None, "tenure-listener", 2),
        ]
        assert len(steps[1].detail or "") == 1000
        assert steps[0].at.tzinfo is not None
        assert [r.correlation_id for r in await store.recent(limit=2)] == ["c-1", "c-1"]
        assert await store.trace("unknown") == []
        assert await store.prune(timedelta(hours=1)) == 0
        assert await store.prune(timedelta(seconds=-60)) == 4
        assert await store.trace("c-1") == []


async def test_recorder_writes_in_the_background_and_keeps_records_while_the_store_fails(
    url: str, tmp_path: Path
) -> None:
    async with ControlStore.open(url) as store:
        recorder = Recorder(store, interval=0.05)
        recorder.start()
        recorder.add(record("c-9", "published", topic="person"))
        for _ in range(100):
            if await store.trace("c-9"):
                break
            await asyncio.sleep(0.02)
        assert [s.outcome for s in await store.trace("c-9")] == ["published"]
        await recorder.close()

        broken = ControlStore(create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
        failing = Recorder(broken, max_buffered=3)
        for outcome in ("a", "b", "c", "d"):
            failing.add(record("c-10", outcome))
        assert failing.dropped == 1
        await failing.flush()
        assert failing.dropped == 1
        await broken.engine.dispose()
        failing.store = store
        await failing.flush()
        assert [s.outcome for s in await store.trace("c-10")] == ["b", "c", "d"]
