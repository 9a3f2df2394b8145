"""Events per second the push dispatcher delivers to a fast local endpoint: events waiting
in the embedded SQLite broker, POSTed (signed, structured mode) to a receiver in another
process on loopback that answers 204 at once; timed from the dispatcher's start until the
subscription has nothing pending.

Usage: .venv/bin/python benchmarks/push_throughput.py [N] [IN_FLIGHT]   (default 5000 64)
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tidings.brokers import connect
from tidings.events import Event, EventData
from tidings.push import PushDispatcher, new_secret
from tidings.testing import publish_events
from tidings.topology import Subscription, Topology


async def receiver_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """An endpoint that reads the body and answers 204."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()  # type: ignore[operator]
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(receiver_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


async def measure(n: int, in_flight: int, url: str, folder: Path) -> float:
    sub = Subscription(
        name="bench", topics=("tenure",), url=url, secret_env="SECRET", in_flight=in_flight
    )
    broker = await connect(f"sqlite:///{folder}/broker.db")
    try:
        await broker.declare(Topology.build(["tenure"], [sub]))
        events = [
            Event(
                event_type="TenureUpdatedEvent",
                source_domain="Tenure",
                source_system="TenureAPI",
                entity_id=f"tenure-{i % 1000}",
                entity_version=i // 1000 + 1,
                event_data=EventData(new_data={"paymentReference": f"PR-{i}"}),
            )
            for i in range(n)
        ]
        for start in range(0, n, 500):
            await publish_events(broker, "tenure", events[start : start + 500])
        dispatcher = PushDispatcher([sub], broker=broker, environ={"SECRET": new_secret()})
        started = time.perf_counter()
        task = asyncio.create_task(dispatcher.run())
        while (await broker.depth("bench")).pending:
            await asyncio.sleep(0.05)
        took = time.perf_counter() - started
        dispatcher.stop()
        await task
        applied = sum(r.stats.total() for r in dispatcher.runtimes.values())
        assert applied == n, f"{applied} settled of {n}"
        return n / took
    finally:
        await broker.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    in_flight = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    port = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_for(port)
        with tempfile.TemporaryDirectory() as folder:
            rate = asyncio.run(measure(n, in_flight, f"http://127.0.0.1:{port}/hook", Path(folder)))
        print(f"push: {n} events, in flight {in_flight}: {rate:,.0f} events/s delivered")
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main()
