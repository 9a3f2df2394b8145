"""Child process for the conformance suite: a consumer that takes deliveries and dies on them.

    python _consumer_proc.py URL SUBSCRIPTION COUNT

Opens the broker at URL, takes COUNT deliveries of SUBSCRIPTION without settling any, prints
``ready`` and sleeps until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from tidings.brokers import Delivery, connect


async def main(url: str, subscription: str, count: int) -> None:
    broker = await connect(url)
    consumer = broker.consume(subscription, prefetch=count)
    held: list[Delivery] = []
    while len(held) < count:
        held.append(await consumer.__anext__())
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
