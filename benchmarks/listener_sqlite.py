"""Events per second through tidings on one machine (the embedded default unless a broker
and database URL are given):

* relay: outbox rows committed (batches of 100 per transaction) -> published to the SQLite
  broker by the relay;
* listener: a no-op handler under the full listener runtime (decode, dispatch, settle),
  with the inbox (a transaction per event) and without it.

Usage: .venv/bin/python benchmarks/listener_sqlite.py [N] [BROKER_URL [DATABASE_URL]]
e.g. ... 5000 'amqp://guest:guest@127.0.0.1:5672/?namespace=bench' \
         'postgresql://postgres@127.0.0.1:5432/test?schema=bench'
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from tidings.brokers import connect
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventData
from tidings.listener import Listener, ListenerRuntime, Outcome
from tidings.outbox import Outbox, Relay
from tidings.testing import drain
from tidings.topology import Subscription, Topology


def make_events(n: int) -> list[Event]:
    return [
        Event(
            event_type="PersonUpdatedEvent",
            source_domain="Person",
            source_system="PersonAPI",
            entity_id=f"person-{i % 1000}",
            entity_version=i // 1000 + 1,
            event_data=EventData(old_data={"surname": "Old"}, new_data={"surname": f"New{i}"}),
        )
        for i in range(n)
    ]


async def main(n: int, broker_url: str | None, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subs = [
            Subscription(name=name, topics=("person",), in_flight=128)
            for name in ("with-inbox", "without-inbox")
        ]
        broker = await connect(broker_url or f"sqlite:///{tmp}/broker.db")
        await broker.declare(Topology.build(["person"], subs))
        engine = create_engine(database_url or f"sqlite:///{Path(tmp)}/domain.db")
        await create_tables(engine)
        sessions = session_factory(engine)
        outbox = Outbox()
        events = make_events(n)

        start = time.perf_counter()
        for i in range(0, n, 100):
            async with sessions() as session, session.begin():
                for event in events[i : i + 100]:
                    await outbox.add(session, "person", event)
        written = time.perf_counter() - start

        relay = Relay(engine, broker, outbox=outbox, batch_size=500)
        start = time.perf_counter()
        while await relay.run_once():
            pass
        relayed = time.perf_counter() - start
        print(f"outbox write (100/txn): {n / written:8.0f} events/s")
        print(f"relay -> broker:        {n / relayed:8.0f} events/s")

        async def noop(event: Event, session: AsyncSession) -> None:
            return None

        for sub, inbox, batch in ((subs[0], True, 64), (subs[1], False, 1)):
            listener = Listener(sub.name)
            listener.on("PersonUpdatedEvent")(noop)
            runtime = ListenerRuntime(
                listener,
                broker=broker,
                subscription=sub,
                sessions=sessions,
                inbox=inbox,
                batch_size=batch,
            )
            start = time.perf_counter()
            stats = await drain(runtime, timeout=600, settle=0.01)
            took = time.perf_counter() - start
            assert stats[Outcome.APPLIED] == n, stats
            label = f"inbox, batch {batch}" if inbox else "no inbox"
            print(f"listener, no-op handler, {label:15}: {n / took:8.0f} events/s")
        if hasattr(broker, "delete_namespace"):
            await broker.delete_namespace()
        await broker.close()
        await engine.dispose()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            int(args[0]) if args else 5000,
            args[1] if len(args) > 1 else None,
            args[2] if len(args) > 2 else None,
        )
    )
