"""The RabbitMQ broker (``pip install 'tidings[rabbitmq]'``), over aio-pika.

``amqp://user:password@host:5672/vhost?namespace=NAME&queue_type=quorum`` (or ``amqps://``).
Options: ``namespace`` prefixes every exchange and queue name with ``NAME.``;
``queue_type`` is ``quorum`` (default) or ``classic``; the AMQP client's ``heartbeat``,
``timeout``, ``name``, ``auth`` and TLS file options pass through. An unknown option is a
:class:`~tidings.errors.ConfigurationError` naming it.

What it creates (names in :mod:`tidings.brokers.rabbitmq.names`): a topic exchange per topic;
per subscription a queue bound by event type (routing key = event type; ``#`` for a
subscription that accepts every type), a dead-letter queue, fixed delay tiers and a policy
record; a catalog of the namespace. Declaring is idempotent and never deletes a queue or
exchange; it adds bindings for new topics and event types and removes those no longer
wanted. Queue arguments never change, so every policy change applies: ``max_attempts`` and
``in_flight`` are read by consumers when they start (at once for consumers of the broker
object that declared). A namespace created with one ``queue_type`` must be opened with it.

What it promises, beyond :mod:`tidings.brokers.base`:

* **Durability.** ``publish`` returns once RabbitMQ confirmed every message (persistent, in
  durable queues: on disk; for quorum queues on a majority of nodes). A refused message
  raises :class:`~tidings.errors.BrokerError`, a missing confirm
  :class:`~tidings.errors.BrokerUnavailable`. Settlements that move a message (retry, dead
  letter) publish its copy with a confirm before acknowledging the original, so a crash
  between the two can deliver it twice, never lose it.
* **Attempts.** ``attempt`` = 1 + deliveries of the message to the subscription before: the
  explicit retries (carried in a header by the republished copy) plus the times it came back
  unsettled. Quorum queues count those exactly (``x-delivery-count``). Classic queues only say
  whether it came back at all, so there the count is a lower bound and a message whose
  consumers keep crashing may never reach ``max_attempts``. A message that comes back
  unsettled after its last attempt is dead-lettered by the next consumer that receives it,
  or at once by a consumer that closes while holding it. A delivery that RabbitMQ pushed to a
  consumer but that the consumer had not handed out yet does not count when the consumer
  closes (it is republished with its count); it does count when the consumer's process or
  connection dies, and when it was still on its way as the consumer closed (the consumer
  waits a moment for those, since AMQP cannot say how many are on their way).
* **Delays.** A retry waits in the subscription's delay tiers; other messages flow meanwhile.
  It is never delivered early (given synchronised clocks between the consumers' machines) and
  at most 10 % + 5 ms late, plus the time it waits behind the subscription's backlog between
  hops when its delay is not a tier (see :data:`~tidings.brokers.rabbitmq.names.DELAY_TIERS_MS`).
* **In flight.** ``prefetch`` is ``basic.qos`` on the consumer's own channel. A delivery is
  held until settled or until its channel goes (no lease); it then comes back and settling it
  is a no-op.
* **Reconnect.** Consumers open a new channel (and connection) by themselves after the
  server restarts or the connection drops, with backoff. Publishes and admin calls reconnect
  on their next call; one in progress when the connection drops raises
  :class:`~tidings.errors.BrokerUnavailable`.
* **Depth.** AMQP reports only ready counts. Deliveries that consumers of this broker object
  received count as ``ready`` until handed out, then as ``in_flight``; those held by
  consumers of other broker objects or processes count nowhere (see
  :meth:`RabbitBroker.depth`).
* **Dead letters** keep their message until redriven or purged; listing or redriving reads
  every dead letter of the subscription (a round trip each).
"""

from __future__ import annotations

from tidings.brokers.rabbitmq.broker import CAPABILITIES, RabbitBroker
from tidings.brokers.rabbitmq.consumer import RabbitConsumer
from tidings.brokers.rabbitmq.url import RabbitOptions, parse_url

__all__ = ["CAPABILITIES", "RabbitBroker", "RabbitConsumer", "RabbitOptions", "parse_url"]
