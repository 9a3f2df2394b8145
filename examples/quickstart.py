"""One publisher, one listener, on the embedded default (a folder of SQLite files).

Run: .venv/bin/python examples/quickstart.py [FOLDER]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from sqlalchemy import Column, MetaData, String, Table, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings import (
    Event,
    EventData,
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
from tidings.testing import drain

TOPOLOGY = Topology.build(
    ["person"],
    [Subscription(name="tenure-listener", topics=("person",), event_types=("PersonUpdatedEvent",))],
)

# The Person domain's own table, and the Tenure domain's copy of a person's name.
person_db = MetaData()
persons = Table(
    "persons", person_db, Column("id", String, primary_key=True), Column("name", String)
)
tenure_db = MetaData()
members = Table(
    "members", tenure_db, Column("id", String, primary_key=True), Column("name", String)
)


async def main(folder: str) -> None:
    broker = await connect(f"sqlite:///{folder}/broker.db")
    await broker.declare(TOPOLOGY)

    # Person API side: the change and its event commit in one transaction.
    person_engine = create_engine(f"sqlite:///{folder}/person.db")
    await create_tables(person_engine, person_db)
    outbox = Outbox()
    async with session_factory(person_engine)() as session, session.begin():
        await session.execute(insert(persons).values(id="p1", name="Ann Smith"))
        await outbox.add(
            session,
            "person",
            Event(
                event_type="PersonUpdatedEvent",
                source_domain="Person",
                source_system="PersonAPI",
                entity_id="p1",
                entity_version=2,
                event_data=EventData(
                    old_data={"name": "Ann Smyth"}, new_data={"name": "Ann Smith"}
                ),
            ),
        )
    relay = Relay(person_engine, broker, outbox=outbox)
    await relay.run_once()

    # Tenure side: a listener keeps its copy current, once per event.
    tenure_engine = create_engine(f"sqlite:///{folder}/tenure.db")
    await create_tables(tenure_engine, tenure_db)
    tenure_sessions = session_factory(tenure_engine)
    async with tenure_sessions() as session, session.begin():
        await session.execute(insert(members).values(id="p1", name="Ann Smyth"))

    listener = Listener("tenure-listener")

    @listener.on("PersonUpdatedEvent")
    async def rename(event: Event, session: AsyncSession) -> None:
        new = event.event_data.new_data or {}
        if "name" in new:
            await session.execute(
                update(members).where(members.c.id == event.entity_id).values(name=new["name"])
            )

    runtime = ListenerRuntime(
        listener,
        broker=broker,
        subscription=TOPOLOGY.subscription("tenure-listener"),
        sessions=tenure_sessions,
    )
    stats = await drain(runtime)
    async with tenure_sessions() as session:
        name = (await session.execute(members.select())).one().name
    print(f"tenure copy of p1: {name!r}; outcomes: {dict((k.value, v) for k, v in stats.items())}")

    await broker.close()
    await person_engine.dispose()
    await tenure_engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(tmp))
