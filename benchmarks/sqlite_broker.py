"""Messages per second through the SQLite broker alone (no codec, no listener runtime).

* publish: batches of 1, 100 and 1000 messages per call, one subscription; and batches of
  100 fanned out to three subscriptions; with ``synchronous=NORMAL`` and ``FULL``;
* consume+ack in one process, a no-op handler: deliveries handled by concurrent tasks
  (as the listener runtime does), unkeyed and with 1000 keys; and one at a time;
* consume+ack by two OS processes sharing one subscription;
* cross-process round trip: this process publishes a ping, a child consumes it and
  publishes a pong, this process consumes the pong (two cross-process hand-overs);
* CPU of a consumer waiting on an empty subscription.

Usage: .venv/bin/python benchmarks/sqlite_broker.py [N]   (default N = 20000)
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time

from tidings.brokers import Delivery, Message
from tidings.brokers.sqlite import SqliteBroker
from tidings.topology import Subscription, Topology

TOPOLOGY = Topology.build(
    ["orders", "ping", "pong", "fan"],
    [
        Subscription(name="work", topics=("orders",), in_flight=256),
        Subscription(name="pings", topics=("ping",)),
        Subscription(name="pongs", topics=("pong",)),
        *(Subscription(name=f"fan-{i}", topics=("fan",)) for i in range(3)),
    ],
)

CHILD_CONSUMER = """
import asyncio, json, sys, time
from tidings.brokers import connect

async def main(url, total):
    broker = await connect(url)
    count, first, last, tasks = 0, None, None, set()
    async def handle(delivery):
        await delivery.ack()
    async with broker.consume("work", prefetch=256) as consumer:
        print("ready", flush=True)
        while True:
            try:
                delivery = await asyncio.wait_for(consumer.__anext__(), 1.0)
            except TimeoutError:
                if count:
                    break
                continue
            first = first or time.time()
            count += 1
            task = asyncio.create_task(handle(delivery))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            last = time.time()
        await asyncio.gather(*tasks)
    await broker.close()
    print(json.dumps([count, first, last]), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

ECHO = """
import asyncio, sys
from tidings.brokers import Message, connect

async def main(url, count):
    broker = await connect(url)
    async with broker.consume("pings") as consumer:
        print("ready", flush=True)
        for _ in range(count):
            ping = await consumer.__anext__()
            pong = Message(id=ping.message.id, event_type="Pong", key="", body=b"")
            await broker.publish("pong", [pong])
            await ping.ack()
    await broker.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def messages(count: int, keys: int = 0, prefix: str = "m") -> list[Message]:
    return [
        Message(
            id=f"{prefix}-{i}",
            event_type="OrderPlaced",
            key=f"order-{i % keys}" if keys else "",
            body=b'{"data": "' + b"x" * 300 + b'"}',
            headers={"correlation-id": f"c-{i}"},
        )
        for i in range(count)
    ]


async def open_broker(folder: str, name: str, synchronous: str = "NORMAL") -> SqliteBroker:
    broker = await SqliteBroker.open(f"sqlite:///{folder}/{name}.db?synchronous={synchronous}")
    await broker.declare(TOPOLOGY)
    return broker


async def publish_rate(broker: SqliteBroker, topic: str, sent: list[Message], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(sent), batch):
        await broker.publish(topic, sent[i : i + batch])
    return len(sent) / (time.perf_counter() - started)


async def consume_concurrently(broker: SqliteBroker, count: int) -> float:
    done = asyncio.Event()
    acked = 0
    handlers: set[asyncio.Task[None]] = set()

    async def handle(delivery: Delivery) -> None:
        nonlocal acked
        await delivery.ack()
        acked += 1
        if acked == count:
            done.set()

    started = time.perf_counter()
    async with broker.consume("work", prefetch=256) as consumer:

        async def pump() -> None:
            async for delivery in consumer:
                task = asyncio.create_task(handle(delivery))
                handlers.add(task)
                task.add_done_callback(handlers.discard)

        pumping = asyncio.create_task(pump())
        await done.wait()
        pumping.cancel()
    return count / (time.perf_counter() - started)


async def consume_one_by_one(broker: SqliteBroker, count: int) -> float:
    started = time.perf_counter()
    async with broker.consume("work", prefetch=256) as consumer:
        for _ in range(count):
            delivery = await consumer.__anext__()
            await delivery.ack()
    return count / (time.perf_counter() - started)


async def spawn(code: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def two_processes(folder: str, count: int) -> tuple[float, list[int]]:
    broker = await open_broker(folder, "procs")
    url = f"sqlite:///{folder}/procs.db"
    children = [await spawn(CHILD_CONSUMER, url, str(count)) for _ in range(2)]
    sent = messages(count, keys=1000)
    for i in range(0, count, 1000):
        await broker.publish("orders", sent[i : i + 1000])
    results = [json.loads((await c.communicate())[0].splitlines()[-1]) for c in children]
    await broker.close()
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    return sum(r[0] for r in results) / (last - first), [r[0] for r in results]


async def round_trips(folder: str, rounds: int) -> list[float]:
    broker = await open_broker(folder, "latency")
    child = await spawn(ECHO, f"sqlite:///{folder}/latency.db", str(rounds))
    trips = []
    async with broker.consume("pongs") as pongs:
        for i in range(rounds):
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            await broker.publish("ping", [Message(id=f"p{i}", event_type="Ping", key="", body=b"")])
            pong = await pongs.__anext__()
            trips.append(time.perf_counter() - started)
            await pong.ack()
    await child.communicate()
    await broker.close()
    return trips


async def idle_cpu(folder: str, seconds: float) -> float:
    broker = await open_broker(folder, "idle")
    consumer = broker.consume("work")
    waiting = asyncio.create_task(consumer.__anext__())
    await asyncio.sleep(0.5)
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    waiting.cancel()
    await consumer.close()
    await broker.close()
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / seconds


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for synchronous in ("NORMAL", "FULL"):
            broker = await open_broker(folder, f"publish-{synchronous}", synchronous)
            single = await publish_rate(broker, "orders", messages(1000, prefix="s"), 1)
            b100 = await publish_rate(broker, "orders", messages(n, prefix="h"), 100)
            b1000 = await publish_rate(broker, "orders", messages(n, prefix="t"), 1000)
            fan = await publish_rate(broker, "fan", messages(n, prefix="f"), 100)
            await broker.close()
            print(
                f"publish synchronous={synchronous}: 1/call {single:,.0f} msg/s, "
                f"100/call {b100:,.0f} msg/s, 1000/call {b1000:,.0f} msg/s, "
                f"100/call to 3 subscriptions {fan:,.0f} msg/s"
            )

        for keys in (0, 1000):
            broker = await open_broker(folder, f"consume-{keys}")
            await publish_rate(broker, "orders", messages(n, keys=keys), 1000)
            rate = await consume_concurrently(broker, n)
            await broker.close()
            print(f"consume+ack, concurrent handlers, {keys or 'no'} keys: {rate:,.0f} msg/s")

        broker = await open_broker(folder, "sequential")
        await publish_rate(broker, "orders", messages(n // 4), 1000)
        rate = await consume_one_by_one(broker, n // 4)
        await broker.close()
        print(f"consume+ack one at a time: {rate:,.0f} msg/s")

        rate, shares = await two_processes(folder, n)
        print(f"consume+ack, two processes: {rate:,.0f} msg/s (shares {shares})")

        trips = await round_trips(folder, 20)
        print(
            f"cross-process round trip (ping + pong): median {statistics.median(trips) * 1e3:.1f}"
            f" ms, max {max(trips) * 1e3:.1f} ms"
        )
        print(f"idle consumer CPU: {await idle_cpu(folder, 5.0) * 100:.2f}% of one core")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
