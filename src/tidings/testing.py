"""Helpers for testing listeners and publishers without a broker server.

Use the ``memory://`` broker with a temporary SQLite database::

    broker = MemoryBroker()
    await broker.declare(topology)
    await publish_events(broker, "person", [event])
    stats = await drain(runtime)
    assert stats[Outcome.APPLIED] == 1
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from tidings.brokers.base import Broker, Message
from tidings.events import Event
from tidings.events.codecs import Codec, encode
from tidings.listener.outcomes import Outcome
from tidings.listener.runtime import ListenerRuntime

__all__ = ["drain", "event_message", "publish_events"]


def event_message(event: Event, codec: str | Codec = "cloudevents") -> Message:
    """The broker message for ``event``, as the relay would publish it."""
    return Message(
        id=str(event.id),
        event_type=event.event_type,
        key=event.entity_id,
        body=encode(event, codec),
        headers={"correlation-id": event.correlation_id},
    )


async def publish_events(
    broker: Broker, topic: str, events: Iterable[Event], codec: str | Codec = "cloudevents"
) -> None:
    """Publish ``events`` to ``topic`` directly, bypassing the outbox."""
    await broker.publish(topic, [event_message(e, codec) for e in events])


async def drain(
    runtime: ListenerRuntime, *, timeout: float = 10.0, settle: float = 0.05
) -> Counter[Outcome]:
    """Run ``runtime`` until its subscription has nothing pending (ready, in flight or
    waiting for a retry), then stop it and return its outcome counts. Raises
    :class:`TimeoutError` if that takes longer than ``timeout`` seconds."""
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(settle)
                if task.done():
                    break
                depth = await runtime.broker.depth(runtime.subscription.name)
                if depth.pending == 0 and runtime.in_flight == 0:
                    break
    finally:
        runtime.stop()
        await task
    return runtime.stats
