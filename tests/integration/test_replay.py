"""``tidings replay``: archived events from a publisher's outbox, to one subscription only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from typer.testing import CliRunner

from tidings import (
    Event,
    Listener,
    ListenerRuntime,
    Outbox,
    Relay,
    Subscription,
    Topology,
    connect,
    create_engine,
    create_tables,
    session_factory,
)
from tidings.brokers import Broker, Delivery, Message
from tidings.cli.main import app
from tidings.cli.output import control_url
from tidings.config import Settings
from tidings.control import ControlStore
from tidings.listener.outcomes import Outcome
from tidings.testing import drain

from ..conftest import require_service

TOPOLOGY = Topology.build(
    ["person", "tenure"],
    [
        Subscription(name="backfill", topics=("person",)),
        Subscription(name="bystander", topics=("person",)),
        Subscription(name="tenure-only", topics=("tenure",)),
    ],
)


@dataclass
class Deployment:
    """A Person publisher (outbox on its SQLite domain database, relay) on one broker."""

    home: Path
    broker_url: str
    broker: Broker
    engine: AsyncEngine
    outbox: Outbox = field(default_factory=Outbox)
    published: list[Message] = field(default_factory=list)
    """What the subscriptions received from the relay, in outbox order."""

    async def write(self, *events: Event) -> None:
        """Commit ``events`` through the outbox and let the relay publish them."""
        async with session_factory(self.engine)() as session, session.begin():
            for event in events:
                await self.outbox.add(session, "person", event)
        relay = Relay(self.engine, self.broker, outbox=self.outbox)
        while await relay.run_once():
            pass
        got = await receive(self.broker, "backfill", len(events))
        assert await receive(self.broker, "bystander", len(events), quiet=0.0)
        self.published += [d.message for d in got]

    async def replay(self, *args: str) -> Result:
        """``tidings replay`` (in a thread: the command runs its own event loop)."""
        argv = ["replay", "--topic", "person", "--domain", "person", *args]
        argv += ["--home", str(self.home), "--broker", self.broker_url]
        return await asyncio.to_thread(CliRunner().invoke, app, argv)


def person_event(entity: str, version: int, event_type: str = "PersonUpdatedEvent") -> Event:
    return Event(
        event_type=event_type,
        source_domain="Person",
        source_system="PersonAPI",
        entity_id=entity,
        entity_version=version,
    )


async def receive(
    broker: Broker, subscription: str, count: int, *, quiet: float = 0.5
) -> list[Delivery]:
    """Take and ack ``count`` deliveries of ``subscription``, then check that no more come
    within ``quiet`` seconds."""
    got: list[Delivery] = []
    async with broker.consume(subscription) as consumer:
        async with asyncio.timeout(10):
            while len(got) < count:
                delivery = await consumer.__anext__()
                got.append(delivery)
                await delivery.ack()
        if quiet:
            with contextlib.suppress(TimeoutError):
                extra = await asyncio.wait_for(consumer.__anext__(), quiet)
                raise AssertionError(f"unexpected delivery of {extra.message.id}")
    return got


@contextlib.asynccontextmanager
async def deployment(home: Path, broker_url: str) -> AsyncIterator[Deployment]:
    broker = await connect(broker_url)
    engine = create_engine(Settings(home, broker_url).domain_database_url("person"))
    try:
        await broker.declare(TOPOLOGY)
        await create_tables(engine)
        yield Deployment(home, broker_url, broker, engine)
    finally:
        delete = getattr(broker, "delete_namespace", None)
        if delete is not None:
            await delete()
        await broker.close()
        await engine.dispose()


@pytest.fixture
async def sqlite_deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    async with deployment(tmp_path, f"sqlite:///{tmp_path}/broker.db") as d:
        yield d


async def _replays_to_one_subscription_only(d: Deployment) -> None:
    events = [person_event(f"p{i % 3}", i // 3 + 1) for i in range(7)]
    await d.write(*events)

    result = await d.replay("--to", "backfill", "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["matched"], summary["replayed"]) == (7, 7)
    again = await receive(d.broker, "backfill", 7)
    assert {(d.attempt, d.topic) for d in again} == {(1, "person")}
    as_sent = {m.id: (m.event_type, m.key, m.body, dict(m.headers)) for m in d.published}
    assert {
        m.id: (m.event_type, m.key, m.body, dict(m.headers)) for m in (x.message for x in again)
    } == as_sent
    if d.broker.capabilities.per_key_order:
        assert [x.message.id for x in again] == [str(e.id) for e in events]
    await receive(d.broker, "bystander", 0)


async def test_replay_reaches_only_the_named_subscription_as_the_relay_sent_it(
    sqlite_deployment: Deployment,
) -> None:
    await _replays_to_one_subscription_only(sqlite_deployment)


@pytest.mark.rabbitmq
async def test_replay_reaches_only_the_named_subscription_on_rabbitmq(tmp_path: Path) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    url = f"amqp://guest:guest@127.0.0.1:5672/?namespace=r{uuid.uuid4().hex[:10]}"
    async with deployment(tmp_path, url) as d:
        await _replays_to_one_subscription_only(d)


async def test_replay_filters_select_by_type_time_and_entity(
    sqlite_deployment: Deployment,
) -> None:
    d = sqlite_deployment
    early = [
        person_event("p1", 1, "PersonCreatedEvent"),
        person_event("p2", 1, "PersonCreatedEvent"),
    ]
    await d.write(*early)
    await asyncio.sleep(0.01)
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.01)
    late = [person_event("p1", 2), person_event("p2", 2), person_event("p3", 1)]
    await d.write(*late)

    async def replayed(*args: str) -> list[str]:
        result = await d.replay("--to", "backfill", *args)
        assert result.exit_code == 0, result.output
        summary = result.stdout.strip().splitlines()[-1]
        count = int(summary.split()[1])
        return sorted(x.message.id for x in await receive(d.broker, "backfill", count))

    by_type = await replayed("--type", "PersonCreatedEvent")
    assert by_type == sorted(str(e.id) for e in early)
    since = await replayed("--since", boundary.isoformat())
    assert since == sorted(str(e.id) for e in late)
    until = await replayed("--until", boundary.isoformat())
    assert until == sorted(str(e.id) for e in early)
    entity = await replayed("--entity", "p1", "--type", "PersonUpdatedEvent")
    assert entity == [str(late[0].id)]
    await receive(d.broker, "bystander", 0)


async def test_dry_run_counts_and_delivers_nothing(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    await d.write(person_event("p1", 1), person_event("p1", 2))

    result = await d.replay("--to", "backfill", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "would replay 2 events of person to backfill" in result.stdout
    await receive(d.broker, "backfill", 0)


async def test_repeated_replays_apply_nothing_twice(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    events = [person_event(f"p{i}", 1) for i in range(5)]
    engine = create_engine(f"sqlite:///{d.home}/listener.db")
    applied = Table("applied", MetaData(), Column("event_id", String, primary_key=True))
    await create_tables(engine, applied.metadata)
    sessions = session_factory(engine)
    listener = Listener("backfill")

    @listener.on("PersonUpdatedEvent")
    async def apply(event: Event, session: AsyncSession) -> None:
        await session.execute(insert(applied).values(event_id=str(event.id)))

    def runtime() -> ListenerRuntime:
        return ListenerRuntime(
            listener,
            broker=d.broker,
            subscription=TOPOLOGY.subscription("backfill"),
            sessions=sessions,
        )

    try:
        await d.write(*events)  # the write's own check consumed them: the listener never did
        first = await d.replay("--to", "backfill")
        assert first.exit_code == 0, first.output
        assert (await drain(runtime()))[Outcome.APPLIED] == 5
        for _ in range(2):
            again = await d.replay("--to", "backfill", "--rate", "50")
            assert again.exit_code == 0, again.output
            assert "replayed 5 events of 5 matched to backfill" in again.stdout
            outcomes = await drain(runtime())
            assert (outcomes[Outcome.DUPLICATE], outcomes[Outcome.APPLIED]) == (5, 0)
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(applied)) == 5
    finally:
        await engine.dispose()


async def test_replay_refuses_a_subscription_that_does_not_take_the_topic(
    sqlite_deployment: Deployment,
) -> None:
    d = sqlite_deployment
    await d.write(person_event("p1", 1))
    async with ControlStore.open(control_url(d.home, None)) as store:
        await store.declared(TOPOLOGY)

    refused = await d.replay("--to", "tenure-only")
    unknown = await d.replay("--to", "nobody")

    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        "tidings: subscription tenure-only does not take topic person (it reads: tenure)"
    ]
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().splitlines() == ["tidings: unknown subscription: nobody"]
    await receive(d.broker, "backfill", 0)
