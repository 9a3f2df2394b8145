"""A small person API for case 4 of ``bench.py`` (why events): one PATCH, three designs.

``PATCH /people/{id}?mode=M&dependents=K`` renames a person in the API's own database, then:

* ``plain``: answers (the write alone, no one else learns of it);
* ``events``: the event goes into the outbox in the same transaction, the API answers, and the
  relay running in this process publishes it to the broker, where every subscription of the
  topic (however many) gets it;
* ``sync``: after its commit the API calls K dependents over HTTP (all at once) and answers
  when every one answered: the user waits for the slowest dependent.

``serve`` runs the API (``WHY_RELAY=off`` leaves the relay out, to see what it costs the
API's own requests); ``dependent`` runs the dependents' endpoint (one process answering
for all K; it does no work, the best case for the synchronous design).

Usage: python benchmarks/why_events_app.py serve PORT DATABASE_URL BROKER_URL DEPENDENTS_URL
       python benchmarks/why_events_app.py dependent PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Response
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update

from tidings.brokers import connect
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventData
from tidings.outbox import Outbox, Relay

PEOPLE = 100

metadata = MetaData()
people = Table(
    "people",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("surname", String(200), nullable=False),
    Column("version", Integer, nullable=False),
)


def api(database_url: str, broker_url: str, dependents_url: str) -> FastAPI:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(database_url)
        await create_tables(engine, metadata)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            if (await session.execute(select(people.c.id).limit(1))).first() is None:
                await session.execute(
                    insert(people),
                    [{"id": f"p{i}", "surname": "Start", "version": 1} for i in range(PEOPLE)],
                )
        broker = await connect(broker_url)
        outbox = Outbox()
        relay = Relay(engine, broker, outbox=outbox)
        relaying = asyncio.create_task(
            relay.run() if os.environ.get("WHY_RELAY", "on") == "on" else asyncio.sleep(0)
        )
        async with httpx.AsyncClient(
            base_url=dependents_url,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        ) as http:
            state.update(sessions=sessions, outbox=outbox, http=http)
            yield
        relay.stop()
        await relaying
        await broker.close()
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.patch("/people/{person_id}", status_code=204)
    async def rename(
        person_id: str, body: dict[str, str], mode: str = "plain", dependents: int = 0
    ) -> Response:
        surname = body["surname"]
        async with state["sessions"]() as session, session.begin():
            version = (
                await session.execute(
                    update(people)
                    .where(people.c.id == person_id)
                    .values(surname=surname, version=people.c.version + 1)
                    .returning(people.c.version)
                )
            ).scalar_one()
            if mode == "events":
                await state["outbox"].add(
                    session,
                    "person",
                    Event(
                        event_type="PersonUpdatedEvent",
                        source_domain="Person",
                        source_system="PersonAPI",
                        entity_id=person_id,
                        entity_version=version,
                        event_data=EventData(old_data={}, new_data={"surname": surname}),
                    ),
                )
        if mode == "sync":
            answers = await asyncio.gather(
                *(
                    state["http"].post(
                        f"/dependents/{i}",
                        json={"id": person_id, "surname": surname, "version": version},
                    )
                    for i in range(dependents)
                )
            )
            for answer in answers:
                answer.raise_for_status()
        return Response(status_code=204)

    return app


def dependents() -> FastAPI:
    app = FastAPI()

    @app.post("/dependents/{number}", status_code=204)
    async def take(number: int, body: dict[str, Any]) -> Response:
        return Response(status_code=204)

    return app


if __name__ == "__main__":
    command, port = sys.argv[1], int(sys.argv[2])
    app = api(*sys.argv[3:6]) if command == "serve" else dependents()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
