from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tidings.brokers.memory import MemoryBroker
from tidings.events import Event, utc_now
from tidings.listener import Listener, ListenerRuntime, Retry
from tidings.outbox import Outbox, Relay, outbox_table
from tidings.testing import drain, publish_events
from tidings.topology import Backoff, Subscription, Topology
from tidings.web import AuthSettings, install

SUB = Subscription(
    name="metered", topics=("t",), max_attempts=5, backoff=Backoff(initial=0.01, jitter=0)
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_listener_counts_outcomes_and_times_handlers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    broker = MemoryBroker()
    await broker.declare(Topology.build(["t"], [SUB]))
    failed = set()
    listener = Listener("metered")

    @listener.on("Tick")
    async def once_failing(event: Event, session: AsyncSession) -> None:
        if event.entity_id == "flaky" and event.entity_id not in failed:
            failed.add(event.entity_id)
            raise Retry("first time")

    before = {
        outcome: sample("tidings_events_settled_total", subscription="metered", outcome=outcome)
        for outcome in ("applied", "retried", "unhandled")
    }
    timed = sample("tidings_handler_seconds_count", subscription="metered", event_type="Tick")
    ticks = [
        Event(event_type="Tick", source_domain="d", source_system="s", entity_id=e)
        for e in ("a", "b", "flaky")
    ]
    other = Event(event_type="Other", source_domain="d", source_system="s", entity_id="x")
    await publish_events(broker, "t", [*ticks, other])
    await drain(ListenerRuntime(listener, broker=broker, subscription=SUB, sessions=sessions))
    after = {
        outcome: sample("tidings_events_settled_total", subscription="metered", outcome=outcome)
        for outcome in before
    }
    assert {k: after[k] - before[k] for k in before} == {
        "applied": 3,
        "retried": 1,
        "unhandled": 1,
    }
    assert (
        sample("tidings_handler_seconds_count", subscription="metered", event_type="Tick") - timed
        == 4
    )
    await broker.close()


async def test_api_serves_prometheus_metrics_without_a_token() -> None:
    app = FastAPI()
    install(app, auth=AuthSettings(secret="s" * 32), name="metered-api")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "tidings_events_settled_total" in response.text


async def test_relay_counts_what_it_published_and_reports_outbox_lag(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    broker = MemoryBroker()
    await broker.declare(Topology.build(["lagging"], []))
    outbox = Outbox()
    before = sample("tidings_events_published_total", topic="lagging")
    async with sessions() as session, session.begin():
        for i in range(3):
            await outbox.add(
                session,
                "lagging",
                Event(event_type="Tick", source_domain="d", source_system="s", entity_id=f"e{i}"),
            )
        await session.execute(update(outbox_table).values(created_at=utc_now() - timedelta(60)))
    relay = Relay(engine, broker, outbox=outbox)
    assert await relay.run_once() == 3
    assert sample("tidings_outbox_lag_seconds") >= 60 * 86400 - 5
    assert sample("tidings_events_published_total", topic="lagging") - before == 3
    assert await relay.run_once() == 0
    assert sample("tidings_outbox_lag_seconds") == 0
    await broker.close()
