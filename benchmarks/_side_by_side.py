"""What the broker benchmarks share: the messages they send, a clock for wall and CPU time,
the tidings side of each measurement (through the Broker protocol only), and the line that
puts a tidings figure beside the raw client's."""

from __future__ import annotations

import asyncio
import time

from tidings.brokers import Broker, Delivery, Message

BODY = b'{"data": "' + b"x" * 300 + b'"}'


def messages(count: int, prefix: str) -> list[Message]:
    return [
        Message(
            id=f"{prefix}-{i}",
            event_type="OrderPlaced",
            key=f"order-{i % 1000}",
            body=BODY,
            headers={"correlation-id": f"c-{i}"},
        )
        for i in range(count)
    ]


class Clock:
    """Wall time and process CPU time of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def report(what: str, count: int, ours: Clock, raw: Clock, *, names: tuple[str, str]) -> None:
    """One line: ours and the raw client's rate and CPU per message, and raw time / ours."""
    print(
        f"{what:<40} {names[0]} {count / ours.wall:>9,.0f} msg/s "
        f"({ours.cpu / count * 1e6:5.0f} µs CPU/msg) | {names[1]} {count / raw.wall:>9,.0f} "
        f"msg/s ({raw.cpu / count * 1e6:5.0f} µs CPU/msg) | ratio {raw.wall / ours.wall:4.2f}"
    )


async def broker_publish(broker: Broker, count: int, batch: int, prefix: str) -> Clock:
    sent = messages(count, prefix)
    with Clock() as clock:
        for i in range(0, count, batch):
            await broker.publish("orders", sent[i : i + batch])
    return clock


async def broker_consume(broker: Broker, count: int, concurrent: bool, prefetch: int) -> Clock:
    done = asyncio.Event()
    acked = 0
    handlers: set[asyncio.Task[None]] = set()

    async def handle(delivery: Delivery) -> None:
        nonlocal acked
        await delivery.ack()
        acked += 1
        if acked == count:
            done.set()

    with Clock() as clock:
        async with broker.consume("work", prefetch=prefetch) as consumer:
            if not concurrent:
                for _ in range(count):
                    await handle(await consumer.__anext__())
            else:

                async def pump() -> None:
                    async for delivery in consumer:
                        task = asyncio.create_task(handle(delivery))
                        handlers.add(task)
                        task.add_done_callback(handlers.discard)

                pumping = asyncio.create_task(pump())
                await done.wait()
                pumping.cancel()
    return clock
