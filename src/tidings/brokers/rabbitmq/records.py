"""Small records kept in queues: a subscription's policy, and the namespace's catalog.

AMQP 0-9-1 cannot list a server's queues or read a queue's arguments, and RabbitMQ never
lets queue arguments change. So what must be readable and changeable lives in messages:

* ``NS.S.policy`` holds the newest policy record of subscription ``S`` (``max_attempts``,
  ``in_flight`` and the bindings last declared). A consumer whose broker object did not
  declare ``S`` reads it when it starts; :meth:`declare` replaces it and uses the old
  bindings to remove those no longer wanted.
* ``NS.tidings.catalog`` holds one record per topic and subscription ever declared in the
  namespace, so that :meth:`delete_namespace` finds them all.

A record is read by taking every message of its queue unacknowledged and giving them back.
While one reader holds them, another sees the queue empty; readers of a policy therefore try
again for a moment before falling back to the defaults of
:class:`~tidings.topology.Subscription`. Records carry a version (nanoseconds since the epoch
of their writer); when a race leaves two, readers keep the newest and delete the older.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from tidings.brokers.rabbitmq.link import Outgoing, Wire
from tidings.topology import Subscription

__all__ = [
    "Policy",
    "give_back",
    "give_back_tags",
    "read_policy_records",
    "take_all",
    "until_counted",
]

Binding = tuple[str, str]
"""(topic, routing key pattern)."""

_DEFAULTS = Subscription(name="defaults", topics=("defaults",))


@dataclass(frozen=True, slots=True)
class Policy:
    """What consumers of a subscription need to know about it."""

    max_attempts: int = _DEFAULTS.max_attempts
    in_flight: int = _DEFAULTS.in_flight
    bindings: frozenset[Binding] = field(default_factory=frozenset)
    version: int = 0

    @classmethod
    def of(cls, subscription: Subscription) -> Policy:
        keys = subscription.event_types or ("#",)
        return cls(
            max_attempts=subscription.max_attempts,
            in_flight=subscription.in_flight,
            bindings=frozenset((topic, key) for topic in subscription.topics for key in keys),
            version=time.time_ns(),
        )

    def record(self, queue: str) -> Outgoing:
        body = json.dumps(
            {
                "version": self.version,
                "max_attempts": self.max_attempts,
                "in_flight": self.in_flight,
                "bindings": sorted(self.bindings),
            }
        ).encode()
        return Outgoing("", queue, body, Basic.Properties(delivery_mode=2))

    @classmethod
    def parse(cls, body: bytes) -> Policy | None:
        try:
            data = json.loads(body)
            return cls(
                max_attempts=int(data["max_attempts"]),
                in_flight=int(data["in_flight"]),
                bindings=frozenset((str(t), str(k)) for t, k in data["bindings"]),
                version=int(data["version"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


async def take_all(wire: Wire, queue: str) -> list[DeliveredMessage]:
    """Every ready message of ``queue``, unacknowledged, in queue order."""
    taken: list[DeliveredMessage] = []
    while True:
        delivered = await wire.basic_get(queue, no_ack=False)
        if not isinstance(delivered.delivery, Basic.GetOk):
            return taken
        taken.append(delivered)


async def give_back(wire: Wire, queue: str, taken: Iterable[DeliveredMessage]) -> None:
    """Return ``taken`` to ``queue`` and wait (up to a second) until RabbitMQ counts them
    ready again, so that the next reader finds them."""
    await give_back_tags(wire, queue, [d.delivery_tag for d in taken if d.delivery_tag])


async def give_back_tags(wire: Wire, queue: str, tags: list[int]) -> None:
    """:func:`give_back` by delivery tag."""
    if not tags:
        return
    before = (await wire.queue_declare(queue, passive=True)).message_count or 0
    for tag in tags:
        await wire.basic_nack(tag, requeue=True)
    await until_counted(wire, queue, before + len(tags))


async def until_counted(wire: Wire, queue: str, at_least: int, timeout: float = 1.0) -> None:
    """Wait until ``queue`` counts ``at_least`` ready messages, or ``timeout`` passed.
    RabbitMQ applies a return a moment after the command that caused it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while ((await wire.queue_declare(queue, passive=True)).message_count or 0) < at_least:
        if asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.001)


async def read_policy_records(wire: Wire, queue: str) -> tuple[Policy | None, list[int]]:
    """The newest policy in ``queue`` and the delivery tags the caller must settle (ack to
    replace, or give back): the newest record's, or, when none is readable, those of the
    unreadable ones. Records older than the newest are acked (deleted) here."""
    taken = await take_all(wire, queue)
    parsed = [(Policy.parse(d.body), d.delivery_tag) for d in taken]
    valid = [(p, tag) for p, tag in parsed if p is not None and tag is not None]
    if not valid:
        return None, [tag for _, tag in parsed if tag is not None]
    newest, newest_tag = max(valid, key=lambda pair: pair[0].version)
    for _, tag in parsed:
        if tag is not None and tag != newest_tag:
            await wire.basic_ack(tag)
    return newest, [newest_tag]
