"""Messages per second through the NATS broker, beside raw nats-py doing the same work on the
same server in the same run.

* publish, batches of 1, 100 and 1000 messages per call: ``NatsBroker.publish`` (every
  message acknowledged by JetStream before the call returns) against nats-py's
  ``publish_async`` for the batch followed by waiting for every PubAck;
* consume+ack with a no-op handler, against a nats-py pull subscription fetching batches of
  the broker's prefetch: ``NatsBroker.consume`` with deliveries handled by concurrent tasks
  (as the listener runtime does) against nats-py acking each message without waiting
  (``msg.ack()``); and one delivery at a time, each ack awaited until the server confirmed
  it, against nats-py's ``msg.ack_sync()``, the same guarantee;
* the CPU time per message of each.

Usage: .venv/bin/python benchmarks/nats_broker.py [N] [URL]
(default N = 20000, URL = nats://127.0.0.1:4222). Uses a namespace of its own and deletes it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import nats
from nats.js import JetStreamContext

from _side_by_side import BODY, Clock, broker_consume, broker_publish, report
from tidings.brokers.nats import NatsBroker
from tidings.topology import Subscription, Topology

NAMES = ("NatsBroker", "nats-py")
PREFETCH = 256


async def raw_publish(js: JetStreamContext, subject: str, count: int, batch: int) -> Clock:
    with Clock() as clock:
        for i in range(0, count, batch):
            futures = [
                await js.publish_async(
                    subject,
                    BODY,
                    headers={"Nats-Msg-Id": f"raw-{batch}-{j}", "correlation-id": f"c-{j}"},
                )
                for j in range(i, min(count, i + batch))
            ]
            await asyncio.gather(*futures)
    return clock


async def raw_consume(js: JetStreamContext, stream: str, count: int, confirm: bool) -> Clock:
    psub = await js.pull_subscribe_bind("raw", stream=stream)
    got = 0
    with Clock() as clock:
        while got < count:
            for msg in await psub.fetch(PREFETCH, timeout=5):
                if confirm:
                    await msg.ack_sync()
                else:
                    await msg.ack()
                got += 1
        await js._nc.flush()
    await psub.unsubscribe()
    return clock


async def main(n: int, url: str) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    topology = Topology.build(["orders"], [Subscription(name="work", topics=("orders",))])
    broker = await NatsBroker.open(f"{url}?namespace={namespace}")
    nc = await nats.connect(url)
    js = nc.jetstream()
    raw_stream = f"{namespace}_raw"
    try:
        await broker.declare(topology)
        await js.add_stream(name=raw_stream, subjects=[f"{namespace}.raw.*"], retention="interest")
        await js.add_consumer(
            raw_stream,
            durable_name="raw",
            ack_policy="explicit",
            filter_subject=f"{namespace}.raw.*",
            max_ack_pending=-1,
        )
        subject = f"{namespace}.raw.OrderPlaced"
        for batch in (1, 100, 1000):
            count = min(n, 2000) if batch == 1 else n
            ours = await broker_publish(broker, count, batch, f"b{batch}")
            raw = await raw_publish(js, subject, count, batch)
            report(f"publish, {batch}/call", count, ours, raw, names=NAMES)
            sequential = batch == 1
            ours = await broker_consume(broker, count, concurrent=not sequential, prefetch=PREFETCH)
            raw = await raw_consume(js, raw_stream, count, confirm=sequential)
            style = "one at a time (ack_sync)" if sequential else "concurrent (ack)"
            report(f"consume+ack, {style}", count, ours, raw, names=NAMES)
    finally:
        await nc.request(f"$JS.API.STREAM.DELETE.{raw_stream}", b"", timeout=5)
        await nc.close()
        await broker.delete_namespace()
        await broker.close()
    print(json.dumps({"n": n, "url": url, "prefetch": PREFETCH}))


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
            sys.argv[2] if len(sys.argv) > 2 else "nats://127.0.0.1:4222",
        )
    )
