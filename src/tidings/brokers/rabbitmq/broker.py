"""The :class:`RabbitBroker`: the broker protocol over RabbitMQ."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from functools import partial

import aiormq

from tidings.brokers.base import (
    Capabilities,
    ClosesOnExit,
    Consumer,
    DeadLetter,
    Depth,
    Message,
    Tail,
)
from tidings.brokers.rabbitmq import admin, dead
from tidings.brokers.rabbitmq.consumer import RabbitConsumer
from tidings.brokers.rabbitmq.hub import Hub
from tidings.brokers.rabbitmq.link import Link, Outgoing, is_not_found
from tidings.brokers.rabbitmq.names import Names
from tidings.brokers.rabbitmq.tail import RabbitTail
from tidings.brokers.rabbitmq.url import RabbitOptions, parse_url
from tidings.brokers.rabbitmq.wire import properties
from tidings.errors import BrokerUnavailable, ConfigurationError, UnknownTopic
from tidings.topology import Topology

__all__ = ["CAPABILITIES", "RabbitBroker"]

CAPABILITIES = Capabilities(
    per_key_order=False, leases=False, durable=True, multi_process=True, shared_depth=False
)
"""* ``per_key_order`` false: competing consumers take messages of one key at once, and a
  retry goes to the back of the queue (through a delay tier), so later messages of its key
  overtake it.
* ``leases`` false: a delivery is held by its channel for as long as the channel lives,
  however long that is; it comes back when the channel, connection or process goes.
* ``durable``: durable queues, persistent messages, publisher confirms.
* ``multi_process``: any number of processes and machines consume one subscription."""


class RabbitBroker(ClosesOnExit):
    """A :class:`~tidings.brokers.base.Broker` on a RabbitMQ server (or cluster).

    Open it with :meth:`open` (or :func:`tidings.brokers.connect`). See
    :mod:`tidings.brokers.rabbitmq` for what it creates and promises.
    """

    def __init__(self, options: RabbitOptions, link: Link) -> None:
        self.options = options
        self._hub = Hub(link, Names(options.prefix, options.queue_type))
        self._checks: dict[str, asyncio.Future[None]] = {}
        self._tails: weakref.WeakSet[RabbitTail] = weakref.WeakSet()

    @classmethod
    async def open(cls, url: str) -> RabbitBroker:
        """Connect to the server ``url`` names. Raises :class:`ConfigurationError` for a bad
        URL, :class:`~tidings.errors.BrokerUnavailable` when the server cannot be reached and
        :class:`~tidings.errors.BrokerError` when it refuses the credentials."""
        options = parse_url(url)
        link = Link(options)
        await link.connection()
        return cls(options, link)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def declare(self, topology: Topology) -> None:
        policies = await admin.declare(self._hub.link, self._hub.names, topology)
        self._hub.policies.update(policies)
        self._hub.topics.update(t.name for t in topology.topics)

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Publish to the topic's exchange (routing key: event type) and return once
        RabbitMQ confirmed every message: it is on disk (on a majority of nodes for quorum
        queues) in every queue it was routed to. A message that no subscription accepts is
        confirmed and dropped."""
        await self._check_topic(topic)
        exchange = self._hub.names.exchange(topic)
        items = [
            Outgoing(exchange, m.event_type, m.body, properties(m), mandatory=False)
            for m in messages
        ]
        try:
            await self._hub.link.publish(items, f"a publish to {topic}")
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            # The exchange of this topic or of a publish sharing the channel went away.
            self._hub.topics.discard(topic)
            await self._check_topic(topic)
            raise BrokerUnavailable(f"a publish to {topic} was interrupted: {exc}") from None

    async def _check_topic(self, topic: str) -> None:
        """Raise :class:`UnknownTopic` unless the topic's exchange exists; one check at a
        time per topic, remembered once it succeeds."""
        if topic in self._hub.topics:
            return
        check = self._checks.get(topic)
        if check is None:
            check = asyncio.ensure_future(self._look_up(topic))
            self._checks[topic] = check
            check.add_done_callback(partial(_checked, self._checks, topic))
        await asyncio.shield(check)

    async def _look_up(self, topic: str) -> None:
        try:
            async with self._hub.link.session(f"looking up topic {topic}") as wire:
                await wire.exchange_declare(self._hub.names.exchange(topic), passive=True)
        except aiormq.exceptions.AMQPError as exc:
            if is_not_found(exc):
                raise UnknownTopic(topic) from None
            raise
        self._hub.topics.add(topic)

    def consume(self, subscription: str, *, prefetch: int | None = None) -> Consumer:
        return RabbitConsumer(self._hub, subscription, prefetch)

    async def depth(self, subscription: str) -> Depth:
        """``ready``, ``delayed`` and ``dead`` are RabbitMQ's counts of ready messages in the
        subscription queue (including delayed retries between two hops), its delay tiers and
        its dead letters. AMQP does not report unacknowledged messages (only the management
        plugin does, and only every few seconds), so the consumers of this broker object
        count their own: what they received but did not hand out yet is added to ``ready``;
        ``in_flight`` is what they handed out and is not settled. Deliveries held by
        consumers of other broker objects or processes are in neither count."""
        hub = self._hub
        waiting, handed = await hub.held(subscription)
        return await admin.depth(hub.link, hub.names, subscription, waiting, handed)

    async def dead_letters(self, subscription: str, *, limit: int = 100) -> list[DeadLetter]:
        return await dead.dead_letters(self._hub.link, self._hub.names, subscription, limit)

    async def redrive(self, subscription: str, ids: Sequence[str] | None = None) -> int:
        return await dead.redrive(self._hub.link, self._hub.names, subscription, ids)

    async def purge(self, subscription: str) -> int:
        return await dead.purge(self._hub.link, self._hub.names, subscription)

    async def deliver(self, subscription: str, messages: Sequence[Message], *, topic: str) -> int:
        """Publish the messages the subscription accepts (by its stored bindings) straight to
        its queue, the way a redrive does, with the topic in a header; return once RabbitMQ
        confirmed them."""
        hub = self._hub
        policy = await hub.policy(subscription)
        if not policy.bindings:
            raise BrokerUnavailable(f"RabbitMQ: cannot read the policy of {subscription}")
        queue = hub.names.queue(subscription)
        items = [
            Outgoing("", queue, m.body, properties(m, topic=topic))
            for m in messages
            if (topic, m.event_type) in policy.bindings or (topic, "#") in policy.bindings
        ]
        await hub.link.publish(items, f"a delivery to {subscription}")
        return len(items)

    def tail(self, topic: str) -> Tail:
        """An exclusive queue of the topic's messages (see
        :mod:`tidings.brokers.rabbitmq.tail`)."""
        tail = RabbitTail(self._hub, topic)
        self._tails.add(tail)
        return tail

    async def delete_namespace(self) -> None:
        """Delete every exchange and queue of this broker's namespace: all topics and
        subscriptions ever declared in it (from the namespace catalog) with their messages.
        For tests and teardown; refused without a ``namespace`` URL option."""
        if not self.options.namespace:
            raise ConfigurationError("delete_namespace needs a broker URL with ?namespace=NAME")
        hub = self._hub
        await admin.delete_namespace(hub.link, hub.names, hub.topics, hub.policies)
        hub.topics.clear()
        hub.policies.clear()

    async def close(self) -> None:
        """Close every consumer of this broker object (giving back what they hold, see
        :class:`RabbitConsumer`) and every tail, then the connection. Idempotent."""
        await asyncio.gather(*(c.close() for c in list(self._hub.consumers)))
        await asyncio.gather(*(t.close() for t in list(self._tails)))
        await self._hub.link.close()

    def __repr__(self) -> str:
        options = self.options
        state = " closed" if self._hub.link.closed else ""
        namespace = f" namespace={options.namespace}" if options.namespace else ""
        return f"<RabbitBroker {options.display_url}{namespace} {options.queue_type}{state}>"


def _checked(
    checks: dict[str, asyncio.Future[None]], topic: str, future: asyncio.Future[None]
) -> None:
    checks.pop(topic, None)
    if not future.cancelled():
        future.exception()
