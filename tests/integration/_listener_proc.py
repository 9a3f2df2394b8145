"""A listener process for the multi-process tests: records one effect row per applied event
(with its pid) in a shared domain database. Usage: _listener_proc.py BROKER_URL DB_URL"""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.brokers import connect
from tidings.db import create_engine, session_factory
from tidings.events import Event
from tidings.listener import Listener, ListenerRuntime
from tidings.topology import Backoff, Subscription, Topology

SUBSCRIPTION = Subscription(
    name="copy",
    topics=("ticks",),
    in_flight=8,
    lease_seconds=1.0,
    max_attempts=10,
    backoff=Backoff(initial=0.05, maximum=0.2),
)
TOPOLOGY = Topology.build(["ticks"], [SUBSCRIPTION])

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("pid", Integer, nullable=False),
)


async def main(broker_url: str, db_url: str) -> None:
    broker = await connect(broker_url)
    engine = create_engine(db_url)
    listener = Listener("copy")

    @listener.on("Tick")
    async def apply(event: Event, session: AsyncSession) -> None:
        await session.execute(insert(effects).values(event_id=str(event.id), pid=os.getpid()))
        await asyncio.sleep(0.002)

    runtime = ListenerRuntime(
        listener, broker=broker, subscription=SUBSCRIPTION, sessions=session_factory(engine)
    )
    runtime.install_signal_handlers()
    print("ready", flush=True)
    try:
        await runtime.run()
    finally:
        await broker.close()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
