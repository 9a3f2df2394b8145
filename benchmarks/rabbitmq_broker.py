"""Messages per second through the RabbitMQ broker, beside raw aio-pika doing the same work on
the same server in the same run.

* publish, batches of 1, 100 and 1000 messages per call: ``RabbitBroker.publish`` (every
  message confirmed by RabbitMQ before the call returns) against aio-pika publishing the
  batch concurrently (``asyncio.gather`` of ``Exchange.publish`` on a channel with publisher
  confirms) to a topic exchange bound to a quorum queue, the same shape;
* consume+ack with a no-op handler: ``RabbitBroker.consume`` with deliveries handled by
  concurrent tasks (as the listener runtime does), and one at a time, against an aio-pika
  consumer callback acking each message; same prefetch;
* the CPU time per message of each.

Usage: .venv/bin/python benchmarks/rabbitmq_broker.py [N] [URL]
(default N = 20000, URL = amqp://guest:guest@127.0.0.1:5672/). Uses a namespace of its own
and deletes it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from _side_by_side import BODY, Clock, broker_consume, broker_publish, report
from tidings.brokers.rabbitmq import RabbitBroker
from tidings.topology import Subscription, Topology

NAMES = ("RabbitBroker", "aio-pika")
PREFETCH = 256


async def raw_publish(exchange: AbstractExchange, count: int, batch: int) -> Clock:
    with Clock() as clock:
        for i in range(0, count, batch):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            BODY,
                            message_id=f"raw-{batch}-{j}",
                            type="OrderPlaced",
                            headers={"correlation-id": f"c-{j}", "x-tidings-key": "k"},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key="OrderPlaced",
                        mandatory=False,
                    )
                    for j in range(i, min(count, i + batch))
                )
            )
    return clock


async def raw_consume(channel: AbstractChannel, queue_name: str, count: int) -> Clock:
    done = asyncio.Event()
    got = 0

    async def handle(message: AbstractIncomingMessage) -> None:
        nonlocal got
        await message.ack()
        got += 1
        if got == count:
            done.set()

    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(queue_name)
    with Clock() as clock:
        tag = await queue.consume(handle)
        await done.wait()
        await queue.cancel(tag)
    return clock


async def main(n: int, url: str) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    topology = Topology.build(["orders"], [Subscription(name="work", topics=("orders",))])
    broker = await RabbitBroker.open(f"{url}?namespace={namespace}")
    connection = await aio_pika.connect(url)
    publishing = await connection.channel(publisher_confirms=True)
    consuming = await connection.channel()
    raw_exchange_name, raw_queue_name = f"{namespace}.raw-orders", f"{namespace}.raw-work"
    try:
        await broker.declare(topology)
        exchange = await publishing.declare_exchange(
            raw_exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        raw_queue = await publishing.declare_queue(
            raw_queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await raw_queue.bind(exchange, routing_key="#")
        for batch in (1, 100, 1000):
            count = min(n, 2000) if batch == 1 else n
            ours = await broker_publish(broker, count, batch, f"b{batch}")
            raw = await raw_publish(exchange, count, batch)
            report(f"publish, {batch}/call", count, ours, raw, names=NAMES)
            ours = await broker_consume(broker, count, concurrent=batch != 1, prefetch=PREFETCH)
            raw = await raw_consume(consuming, raw_queue_name, count)
            style = "concurrent handlers" if batch != 1 else "one at a time"
            report(f"consume+ack, {style}", count, ours, raw, names=NAMES)
    finally:
        await publishing.queue_delete(raw_queue_name)
        await publishing.exchange_delete(raw_exchange_name)
        await connection.close()
        await broker.delete_namespace()
        await broker.close()
    print(json.dumps({"n": n, "url": url.split("@")[-1], "prefetch": PREFETCH}))


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
            sys.argv[2] if len(sys.argv) > 2 else "amqp://guest:guest@127.0.0.1:5672/",
        )
    )
