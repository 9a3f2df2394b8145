from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tidings.brokers.base import Message
from tidings.brokers.memory import MemoryBroker
from tidings.brokers.sqlite.database import immediate
from tidings.db import create_engine, create_tables, session_factory
from tidings.errors import BrokerUnavailable, EventTooLarge
from tidings.events import Event, EventData
from tidings.events.codecs import decode
from tidings.events.model import utc_now
from tidings.outbox import Outbox, Relay, outbox_table
from tidings.outbox import relay as relay_module
from tidings.outbox import sqlite as outbox_sqlite
from tidings.topology import Subscription, Topology

from ..outbox_support import FailingBroker, published_and_claimed
from .conftest import effects, effects_metadata

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
            await session.execute(insert(effects).values(event_id=str(e.id), entity_id="x"))
            await outbox.add(session, "person", e)


async def received(broker: MemoryBroker, count: int) -> list[Event]:
    events: list[Event] = []
    async with broker.consume("copy", prefetch=1000) as consumer:
        async with asyncio.timeout(5):
            while len(events) < count:
                delivery = await consumer.__anext__()
                events.append(decode(delivery.message.body))
                await delivery.ack()
    return events


async def outbox_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox_table))).scalar())


async def test_event_commits_and_rolls_back_with_the_entity_change(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outbox = Outbox()
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await outbox.add(session, "person", event("p1", 1))
            raise RuntimeError("the entity write failed")
    assert await outbox_rows(engine) == 0
    assert not outbox.committed.is_set()
    await write(sessions, outbox, [event("p1", 1)])
    assert await outbox_rows(engine) == 1
    assert outbox.committed.is_set()


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
    for entity in {e.entity_id for e in events}:
        versions = [e.entity_version for e in got if e.entity_id == entity]
        assert versions == sorted(versions)
    assert (await broker.depth("copy")).ready == 0


async def test_an_in_memory_outbox_is_claimed_through_the_engine(broker: MemoryBroker) -> None:
    """No second connection can open an in-memory database, so there the relay claims and
    marks with the engine's own statements."""
    engine = create_engine("sqlite:///:memory:")
    await create_tables(engine, effects_metadata)
    sessions = session_factory(engine)
    outbox = Outbox()
    events = [event(f"p{i % 3}", i // 3 + 1) for i in range(90)]
    await write(sessions, outbox, events)
    relay = Relay(engine, broker, outbox=outbox, batch_size=20)
    assert await relay.run_once() == 90
    assert await relay.pending() == 0
    got = await received(broker, 90)
    for entity in ("p0", "p1", "p2"):
        versions = [e.entity_version for e in got if e.entity_id == entity]
        assert versions == list(range(1, 31))
    await engine.dispose()


async def test_relay_is_woken_by_a_commit_not_by_its_poll(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    relay = Relay(engine, broker, outbox=outbox, poll_interval=60)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.1)
    await write(sessions, outbox, [event("p1", 1)])
    got = await received(broker, 1)  # within 5 s, far below the 60 s poll
    relay.stop()
    await task
    assert got[0].entity_id == "p1"


async def test_commits_one_by_one_cost_the_relay_one_write_transaction_each(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    broker: MemoryBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim a commit brings also marks the batch the commit before brought: one write
    transaction per commit where a claim and a mark would be two. Stopping marks the last
    batch at once, without waiting out the hold."""
    monkeypatch.setattr(relay_module, "_HOLD_SECONDS", 30.0)
    transactions: list[object] = []

    @contextlib.contextmanager
    def counted(conn: sqlite3.Connection) -> Iterator[None]:
        transactions.append(conn)
        with immediate(conn):
            yield

    monkeypatch.setattr(outbox_sqlite, "immediate", counted)  # the relay's write transactions
    outbox = Outbox()
    relay = Relay(engine, broker, outbox=outbox, poll_interval=60)
    task = asyncio.create_task(relay.run())
    got: list[str] = []
    async with broker.consume("copy") as consumer:
        for version in range(1, 21):
            await write(sessions, outbox, [event("p1", version)])
            async with asyncio.timeout(5):
                delivery = await consumer.__anext__()
            got.append(str(decode(delivery.message.body).entity_version))
            await delivery.ack()
    assert got == [str(v) for v in range(1, 21)]
    assert await relay.pending() == 1, "the last batch is held, for the next claim to mark"
    # One per commit, and one spare (a claim that finds the commit before it marked
    # already): a claim and a mark each would be 40.
    assert 20 <= len(transactions) <= 21
    started = asyncio.get_running_loop().time()
    relay.stop()
    await task
    assert asyncio.get_running_loop().time() - started < 5
    assert await relay.pending() == 0


async def test_a_held_batch_is_marked_when_no_commit_follows(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    relay = Relay(engine, broker, outbox=outbox, poll_interval=60)
    task = asyncio.create_task(relay.run())
    await write(sessions, outbox, [event("p1", 1)])
    await received(broker, 1)
    async with asyncio.timeout(5):
        while await relay.pending():
            await asyncio.sleep(0.01)
    assert not task.done()
    relay.stop()
    await task


class FlakyBroker(MemoryBroker):
    """Refuses the first ``failures`` publishes, as a broker that is down would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("connection refused")
        await super().publish(topic, messages)


async def test_relay_backs_off_while_the_broker_is_down_and_catches_up(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    broker = FlakyBroker(failures=3)
    await broker.declare(TOPOLOGY)
    outbox = Outbox()
    await write(sessions, outbox, [event("p1", v) for v in range(1, 11)])
    relay = Relay(engine, broker, outbox=outbox, poll_interval=0.05, max_backoff=0.2)
    task = asyncio.create_task(relay.run())
    got = await received(broker, 10)
    relay.stop()
    await task
    assert broker.failures == 0
    assert [e.entity_version for e in got] == list(range(1, 11))
    assert await relay.pending() == 0
    await broker.close()


async def test_relay_waits_out_a_database_error_instead_of_stopping(
    tmp_path: Path, broker: MemoryBroker
) -> None:
    """A database that refuses the relay (here: its tables do not exist yet, as while a
    server starts up) is retried with backoff; the relay never stops while its API may still
    accept writes."""
    engine = create_engine(f"sqlite:///{tmp_path}/late.db")
    relay = Relay(engine, broker, poll_interval=0.05, max_backoff=0.2)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)
    assert not task.done(), "the relay stopped on a database error"
    await create_tables(engine, effects.metadata)
    await write(session_factory(engine), Outbox(), [event("p1", 1), event("p1", 2)])
    got = await received(broker, 2)
    relay.stop()
    await task
    assert [e.entity_version for e in got] == [1, 2]
    await engine.dispose()


async def test_a_row_that_commits_behind_published_rows_is_still_published(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    await write(sessions, outbox, [event("p1", 1), event("p2", 1)])
    relay = Relay(engine, broker, outbox=outbox)
    assert await relay.run_once() == 2
    late = event("p3", 1)
    async with sessions() as session, session.begin():
        await outbox.add(session, "person", late)
        # As if this transaction had taken its sequence number before the others committed.
        await session.execute(
            update(outbox_table).where(outbox_table.c.event_id == str(late.id)).values(seq=0)
        )
    assert await relay.run_once() == 1
    got = await received(broker, 3)
    assert str(late.id) in {str(e.id) for e in got}


class HeldBroker(MemoryBroker):
    """Publishes into ``into``, but holds every publish until :attr:`go` is set."""

    def __init__(self, into: MemoryBroker) -> None:
        super().__init__()
        self.into = into
        self.holding = asyncio.Event()
        self.go = asyncio.Event()

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        self.holding.set()
        await self.go.wait()
        await self.into.publish(topic, messages)


async def test_two_relays_share_an_outbox_publishing_each_row_once(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    events = [event(f"p{i % 100}", i // 100 + 1) for i in range(500)]
    for i in range(0, 500, 25):
        await write(sessions, outbox, events[i : i + 25])
    held = HeldBroker(broker)
    first = Relay(engine, held, batch_size=20, name="r0")
    second = Relay(engine, broker, batch_size=20, name="r1")
    task = asyncio.create_task(first.run_once())
    await held.holding.wait()  # r0 has a batch in flight, and claims the next meanwhile
    assert await second.run_once() >= 300, "r1 takes every entity r0 holds no row of"
    held.go.set()
    assert await task == 500 - second.published, "r0 publishes the rest once it is let go"
    assert await first.pending() == 0
    got = await received(broker, 500)
    assert len({str(e.id) for e in got}) == 500
    for entity in {e.entity_id for e in events}:
        versions = [e.entity_version for e in got if e.entity_id == entity]
        assert versions == sorted(versions)


async def test_a_failed_publish_marks_only_what_was_confirmed_and_releases_the_rest(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The batch claimed ahead while the failing one was in flight is released with it, so
    that the rows go to whichever relay claims next, in order, and nothing is lost."""
    broker = FailingBroker(good=1)
    await broker.declare(TOPOLOGY)
    outbox = Outbox()
    await write(sessions, outbox, [event(f"p{v % 3}", v) for v in range(1, 61)])
    relay = Relay(engine, broker, outbox=outbox, batch_size=20)
    with pytest.raises(BrokerUnavailable):
        await relay.run_once()
    published, claimed = await published_and_claimed(engine)
    assert (published, claimed) == (20, 0)
    broker.good = 10
    assert await Relay(engine, broker, outbox=outbox, batch_size=20).run_once() == 40
    got = await received(broker, 60)
    assert sorted(e.entity_version or 0 for e in got) == list(range(1, 61))
    for entity in ("p0", "p1", "p2"):
        versions = [e.entity_version for e in got if e.entity_id == entity]
        assert versions == sorted(versions)
    await broker.close()


async def test_published_rows_are_kept_for_the_retention_then_deleted(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], broker: MemoryBroker
) -> None:
    outbox = Outbox()
    await write(sessions, outbox, [event("p1", 1), event("p1", 2)])
    relay = Relay(engine, broker, retention=timedelta(hours=1))
    await relay.run_once()
    assert await relay.delete_expired() == 0
    async with engine.begin() as conn:
        await conn.execute(
            update(outbox_table)
            .where(outbox_table.c.entity_version == 1)
            .values(published_at=utc_now() - timedelta(hours=2))
        )
    assert await relay.delete_expired() == 1
    assert await outbox_rows(engine) == 1


async def test_an_event_above_the_size_limit_is_refused_and_nothing_is_written(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outbox = Outbox(max_event_bytes=1024)
    big = event("p1", 1).model_copy(update={"event_data": EventData(new_data={"x": "y" * 2000})})
    with pytest.raises(EventTooLarge):
        async with sessions() as session, session.begin():
            await outbox.add(session, "person", big)
    assert await outbox_rows(engine) == 0
