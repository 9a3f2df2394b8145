"""A listener process for ``bench.py``: tidings listener runtimes (no inbox) on the given
subscriptions, a no-op handler or one that waits 10 ms (I/O), until SIGTERM.

Prints ``ready`` once running, then every 0.1 s a JSON line ``{"t": wall time, "settled":
events settled so far}``, so the parent can count what was done in a window of its choice.

Usage: python benchmarks/_bench_worker.py BROKER_URL SUB[,SUB...] IN_FLIGHT noop|sleep10
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time

from sqlalchemy.ext.asyncio import AsyncSession

from tidings.brokers import connect
from tidings.db import create_engine, session_factory
from tidings.events import Event
from tidings.listener import Listener, ListenerRuntime
from tidings.topology import Subscription


async def noop(event: Event, session: AsyncSession) -> None:
    return None


async def sleep10(event: Event, session: AsyncSession) -> None:
    await asyncio.sleep(0.010)


async def main(broker_url: str, names: list[str], in_flight: int, handler: str) -> None:
    broker = await connect(broker_url)
    engine = create_engine("sqlite:///:memory:")
    sessions = session_factory(engine)
    runtimes = []
    for name in names:
        listener = Listener(name)
        listener.on("PersonUpdatedEvent")(sleep10 if handler == "sleep10" else noop)
        runtimes.append(
            ListenerRuntime(
                listener,
                broker=broker,
                subscription=Subscription(name=name, topics=("person",), in_flight=in_flight),
                sessions=sessions,
                inbox=False,
            )
        )
    tasks = [asyncio.create_task(r.run()) for r in runtimes]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print("ready", flush=True)
    while not stopping.is_set():
        settled = sum(sum(r.stats.values()) for r in runtimes)
        print(json.dumps({"t": time.time(), "settled": settled}), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.1)
    for runtime in runtimes:
        runtime.shutdown_grace = 1.0
        runtime.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await broker.close()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]))
