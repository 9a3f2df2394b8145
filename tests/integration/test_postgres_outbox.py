"""The outbox and its relays on a real PostgreSQL: claims that several relays share, per-entity
order, late commits, and wake-ups by LISTEN/NOTIFY. Each test works in a schema of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tidings.brokers.memory import MemoryBroker
from tidings.db import create_engine, create_tables, session_factory
from tidings.errors import BrokerUnavailable
from tidings.events import Event, EventData
from tidings.events.codecs import decode
from tidings.events.model import utc_now
from tidings.outbox import Outbox, Relay, outbox_table
from tidings.outbox.postgres import Wakeups
from tidings.topology import Subscription, Topology

from ..conftest import require_service
from ..outbox_support import FailingBroker, published_and_claimed

pytestmark = pytest.mark.postgres

URL = "postgresql://postgres@127.0.0.1:5432/test"
TOPOLOGY = Topology.build(["person"], [Subscription(name="copy", topics=("person",))])


def event(entity: str, version: int) -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id=entity,
        entity_version=version,
        event_data=EventData(new_data={"v": version}),
    )


async def drop_schema(name: str) -> None:
    admin = create_engine(URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schema(name)


@pytest.fixture
async def engine(schema: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(URL, schema=schema)
    await create_tables(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker()
    await broker.declare(TOPOLOGY)
    yield broker
    await broker.close()


async def write(
    sessions: async_sessionmaker[AsyncSession], outbox: Outbox, events: Sequence[Event]
) -> None:
    async with sessions() as session, session.begin():
        for e in events:
            await outbox.add(session, "person", e)


async def received(broker: MemoryBroker, count: int, timeout: float = 10) -> list[Event]:
    """The first ``count`` events on the subscription, in the order the broker got them."""
    events: list[Event] = []
    async with broker.consume("copy", prefetch=5000) as consumer:
        async with asyncio.timeout(timeout):
            while len(events) < count:
                delivery = await consumer.__anext__()
                events.append(decode(delivery.message.body))
                await delivery.ack()
    return events


def assert_in_order_per_entity(got: Sequence[Event]) -> None:
    for entity in {e.entity_id for e in got}:
        versions = [e.entity_version or 0 for e in got if e.entity_id == entity]
        assert versions == sorted(versions), entity


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).where(outbox_table.c.published_at.is_(None))
        return int((await conn.execute(query)).scalar_one())


async def test_an_event_commits_and_rolls_back_with_the_transaction(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outbox = Outbox()
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await outbox.add(session, "person", event("p1", 1))
            raise RuntimeError("the entity write failed")
    assert await pending(engine) == 0
    await write(sessions, outbox, [event("p1", 1)])
    assert await pending(engine) == 1 and outbox.committed.is_set()
    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox_table))).one()
    assert row.headers["content-type"] == "application/cloudevents+json"
    assert row.created_at.tzinfo is not None and decode(bytes(row.body)).entity_id == "p1"


async def test_relay_publishes_every_row_once_in_order_per_entity(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    events = [event(f"p{i % 7}", i // 7 + 1) for i in range(700)]
    for i in range(0, len(events), 50):
        await write(sessions, outbox, events[i : i + 50])
    relay = Relay(engine, broker, outbox=outbox, batch_size=64)
    while await relay.run_once():
        pass
    assert relay.published == 700 and await relay.pending() == 0
    got = await received(broker, 700)
    assert sorted(str(e.id) for e in got) == sorted(str(e.id) for e in events)
    assert_in_order_per_entity(got)
    assert (await broker.depth("copy")).ready == 0


async def test_three_relays_with_their_own_engines_publish_each_row_once_in_entity_order(
    schema: str, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    broker = MemoryBroker()
    await broker.declare(TOPOLOGY)
    engines = [create_engine(URL, schema=schema) for _ in range(3)]
    relays = [
        Relay(e, broker, batch_size=50, poll_interval=0.2, name=f"relay-{i}")
        for i, e in enumerate(engines)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    outbox = Outbox()
    events = [event(f"p{i % 20}", i // 20 + 1) for i in range(2000)]
    for i in range(0, len(events), 20):
        await write(sessions, outbox, events[i : i + 20])
    got = await received(broker, 2000, timeout=60)
    for r in relays:
        r.stop()
    await asyncio.gather(*tasks)
    assert len({str(e.id) for e in got}) == 2000
    assert sum(r.published for r in relays) == 2000
    assert (await broker.depth("copy")).ready == 0, "a row was published twice"
    assert sum(1 for r in relays if r.published) >= 2, "the relays did not share the work"
    assert_in_order_per_entity(got)
    assert await pending(engine) == 0
    await broker.close()
    for e in engines:
        await e.dispose()


async def test_a_row_whose_transaction_commits_after_a_later_rows_is_still_published(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    relay = Relay(engine, broker)
    first, later = event("p1", 1), event("p2", 1)
    async with sessions() as slow, slow.begin():
        await outbox.add(slow, "person", first)
        await write(sessions, outbox, [later])
        assert await relay.run_once() == 1
    assert await relay.run_once() == 1
    got = await received(broker, 2)
    assert [str(e.id) for e in got] == [str(later.id), str(first.id)]
    async with engine.connect() as conn:
        seqs = dict((await conn.execute(select(outbox_table.c.event_id, outbox_table.c.seq))).all())
    assert seqs[str(first.id)] < seqs[str(later.id)]


async def test_a_later_row_waits_while_another_relay_holds_an_earlier_row_of_its_entity(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    await write(sessions, outbox, [event("e", 1), event("e", 2), event("f", 1)])
    relay = Relay(engine, broker, name="mine")
    claimed = update(outbox_table).where(outbox_table.c.entity_version == 1)
    first_of_e = (outbox_table.c.entity_id == "e") & (outbox_table.c.entity_version == 1)
    async with engine.connect() as other:
        await other.execute(select(outbox_table.c.seq).where(first_of_e).with_for_update())
        assert await relay.run_once() == 1, "only f:1 while another claim of e:1 is in flight"
        await other.execute(
            claimed.where(first_of_e).values(
                claimed_by="other", claimed_until=utc_now() + timedelta(seconds=30)
            )
        )
        await other.commit()
    assert await relay.run_once() == 0, "e:2 waits while e:1 is claimed by another relay"
    async with engine.begin() as conn:
        await conn.execute(
            claimed.where(first_of_e).values(claimed_until=utc_now() - timedelta(seconds=1))
        )
    assert await relay.run_once() == 2, "an expired claim is taken over, in entity order"
    got = await received(broker, 3)
    assert [(e.entity_id, e.entity_version) for e in got] == [("f", 1), ("e", 1), ("e", 2)]


async def test_a_failed_publish_marks_only_what_was_confirmed_and_releases_the_rest(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The claim made while the failing batch was in flight (which also marked the batch
    before it) is released with it; the rows are then published in entity order, once."""
    broker = FailingBroker(good=2)
    await broker.declare(TOPOLOGY)
    outbox = Outbox()
    await write(sessions, outbox, [event(f"p{v % 40}", v // 40 + 1) for v in range(120)])
    relay = Relay(engine, broker, outbox=outbox, batch_size=30)
    with pytest.raises(BrokerUnavailable):
        await relay.run_once()
    published, claimed = await published_and_claimed(engine)
    assert claimed == 0 and 0 < published < 120
    assert published == (await broker.depth("copy")).ready, "marked is what the broker took"
    broker.good = 10
    assert await Relay(engine, broker, outbox=outbox, batch_size=30).run_once() == 120 - published
    got = await received(broker, 120)
    assert len({str(e.id) for e in got}) == 120
    assert_in_order_per_entity(got)
    await broker.close()


async def test_a_commit_in_another_process_wakes_the_relay_long_before_its_poll(
    schema: str, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    elsewhere = create_engine(URL, schema=schema)
    relay = Relay(elsewhere, broker, poll_interval=60)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    for version in (1, 2):
        started = loop.time()
        await write(sessions, Outbox(), [event("p1", version)])
        [got] = await received(broker, 1, timeout=5)
        assert got.entity_version == version
        assert loop.time() - started < 2
    relay.stop()
    await asyncio.wait_for(task, 5)
    await elsewhere.dispose()


async def test_wakeups_hear_commits_of_their_own_schema_only(
    schema: str, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    neighbour = f"{schema}_n"
    other = create_engine(URL, schema=neighbour)
    await create_tables(other)
    wakeups = Wakeups(engine)
    try:
        assert await wakeups.start() and wakeups.listening
        await write(session_factory(other), Outbox(), [event("p1", 1)])
        async with sessions() as session, session.begin():
            await Outbox().add(session, "person", event("p1", 1))
            await session.flush()
            await asyncio.sleep(0.2)
            assert not wakeups.event.is_set(), "not before commit, nor from another schema"
        await asyncio.wait_for(wakeups.event.wait(), 2)
    finally:
        await wakeups.close()
        await other.dispose()
        await drop_schema(neighbour)
    assert not wakeups.listening


async def test_a_relay_whose_connections_are_killed_listens_again_and_publishes(
    schema: str, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    name = f"relay-{uuid.uuid4().hex[:8]}"
    elsewhere = create_engine(
        URL, schema=schema, connect_args={"server_settings": {"application_name": name}}
    )
    relay = Relay(elsewhere, broker, poll_interval=60, max_backoff=0.5)
    task = asyncio.create_task(relay.run())
    await write(sessions, Outbox(), [event("p1", 1)])
    await received(broker, 1, timeout=5)
    while await relay.pending():
        await asyncio.sleep(0.05)
    async with sessions() as session:
        killed = await session.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = :name"
            ),
            {"name": name},
        )
    assert killed
    await asyncio.sleep(0.5)
    await write(sessions, Outbox(), [event("p1", 2)])
    [got] = await received(broker, 1, timeout=5)
    assert got.entity_version == 2
    relay.stop()
    await asyncio.wait_for(task, 5)
    await elsewhere.dispose()
