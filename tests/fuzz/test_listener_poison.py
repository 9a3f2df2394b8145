"""A listener fed hostile bodies through the embedded SQLite broker (a real backend, on disk)
dead-letters each one at once with its reason and keeps applying the good events around
them; nothing it is sent stops it or is held back."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from housing_contracts import catalog
from tidings.brokers import connect
from tidings.brokers.base import Message
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventData
from tidings.events.codecs import CODECS
from tidings.listener import Listener, ListenerRuntime, Outcome
from tidings.testing import drain, event_message
from tidings.topology import Backoff, Subscription, Topology

from .test_codec_fuzz import HOSTILE, MAY_DECODE

SUB = Subscription(
    name="tenure-listener",
    topics=("person",),
    max_attempts=3,
    backoff=Backoff(initial=0.01, maximum=0.05, jitter=0),
    in_flight=8,
)

tables = MetaData()
applied = Table(
    "applied",
    tables,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
)


def good(n: int) -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id=f"p-{n % 3}",
        entity_version=n + 1,
        event_data=EventData(old_data={}, new_data={"firstName": f"Name {n}"}),
    )


def poison(body: bytes) -> Message:
    return Message(
        id=str(uuid.uuid4()), event_type="PersonUpdatedEvent", key="p-0", body=body, headers={}
    )


async def test_hostile_bodies_are_dead_lettered_and_the_listener_keeps_going(
    tmp_path: Path,
) -> None:
    broker = await connect(f"sqlite:///{tmp_path}/broker.db")
    engine = create_engine(f"sqlite:///{tmp_path}/listener.db")
    await create_tables(engine, tables)
    listener = Listener(SUB.name)

    @listener.on("PersonUpdatedEvent")
    async def apply(event: Event, session: AsyncSession) -> None:
        await session.execute(insert(applied).values(event_id=str(event.id)))

    hostile = {
        f"{case}/{codec}": HOSTILE[case](codec)
        for case in sorted(set(HOSTILE) - MAY_DECODE)
        for codec in sorted(CODECS)
    }
    schema_violation = good(999).model_copy(
        update={"event_data": EventData(new_data={"dateOfBirth": "not a date"})}
    )
    goods = [good(n) for n in range(len(hostile) + 1)]
    messages: list[Message] = []
    for i, body in enumerate(hostile.values()):
        messages += [event_message(goods[i]), poison(body)]
    messages += [event_message(schema_violation), event_message(goods[-1])]
    try:
        await broker.declare(Topology.build(["person"], [SUB]))
        for start in range(0, len(messages), 10):
            await broker.publish("person", messages[start : start + 10])
        runtime = ListenerRuntime(
            listener,
            broker=broker,
            subscription=SUB,
            sessions=session_factory(engine),
            catalog=catalog,
        )
        stats = await drain(runtime, timeout=60)

        assert stats[Outcome.APPLIED] == len(goods)
        assert stats[Outcome.DEAD_LETTERED] == len(hostile) + 1
        assert stats[Outcome.RETRIED] == 0, "a poison body is never worth a retry"
        dead = await broker.dead_letters(SUB.name, limit=1000)
        reasons = {letter.message.id: letter.reason for letter in dead}
        assert len(reasons) == len(hostile) + 1
        for letter in dead:
            assert letter.attempts == 1
            if letter.message.id == str(schema_violation.id):
                assert letter.reason.startswith("rejected: ")
                assert "dateOfBirth" in letter.reason
            else:
                assert letter.reason.startswith("undecodable: "), letter.reason
                assert "\n" not in letter.reason and len(letter.reason) < 400
        async with session_factory(engine)() as session:
            ids = (await session.execute(select(applied.c.event_id))).scalars().all()
        assert sorted(ids) == sorted(str(e.id) for e in goods)
        depth = await broker.depth(SUB.name)
        assert (depth.ready, depth.in_flight, depth.delayed) == (0, 0, 0)
    finally:
        await broker.close()
        await engine.dispose()
