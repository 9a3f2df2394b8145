"""The copies a settlement publishes in place of a delivery before acknowledging it.

AMQP cannot change a message in a queue, so every settlement but ``ack`` republishes the
message (same id, body, type, key and headers) with the broker's bookkeeping updated, waits
for RabbitMQ's confirm and only then acknowledges the original: a crash in between delivers
it twice, never loses it.
"""

from __future__ import annotations

import secrets

from pamqp.common import FieldValue

from tidings.brokers.rabbitmq import wire as amqp
from tidings.brokers.rabbitmq.link import Outgoing
from tidings.brokers.rabbitmq.names import Names, next_hop

__all__ = ["dead_copy", "park_copy", "redriven_copy", "retry_copy", "unseen_copy"]


def _copy(incoming: amqp.Incoming, queue: str, extra: dict[str, FieldValue]) -> Outgoing:
    properties = amqp.copy_properties(incoming, extra)
    return Outgoing("", queue, incoming.message.body, properties)


def retry_copy(names: Names, subscription: str, incoming: amqp.Incoming, delay: float) -> Outgoing:
    """Deliver again after ``delay`` seconds: at once into the subscription queue, or into
    the first delay tier with its due time, counting the attempt just made."""
    now = amqp.now_us()
    extra: dict[str, FieldValue] = {
        amqp.ATTEMPT: incoming.attempt,
        amqp.FIRST_FAILED: incoming.first_failed_us or now,
    }
    if delay <= 0:
        return _copy(incoming, names.queue(subscription), extra)
    extra[amqp.DUE] = now + int(delay * 1_000_000)
    return _copy(incoming, names.delay(subscription, next_hop(delay * 1000)), extra)


def park_copy(names: Names, subscription: str, incoming: amqp.Incoming, due: int) -> Outgoing:
    """Wait in the next delay tier until ``due``: a hop, not a delivery, so the attempt count
    stays what the retry made it."""
    extra: dict[str, FieldValue] = {amqp.ATTEMPT: incoming.prior, amqp.DUE: due}
    if incoming.first_failed_us is not None:
        extra[amqp.FIRST_FAILED] = incoming.first_failed_us
    tier = next_hop((due - amqp.now_us()) / 1000)
    return _copy(incoming, names.delay(subscription, tier), extra)


def unseen_copy(names: Names, subscription: str, incoming: amqp.Incoming) -> Outgoing:
    """Back into the subscription queue a delivery that was never handed out, with the same
    attempt it would have had."""
    extra: dict[str, FieldValue] = {amqp.ATTEMPT: incoming.attempt - 1}
    if incoming.first_failed_us is not None:
        extra[amqp.FIRST_FAILED] = incoming.first_failed_us
    return _copy(incoming, names.queue(subscription), extra)


def dead_copy(
    names: Names, subscription: str, incoming: amqp.Incoming, reason: str, attempts: int
) -> Outgoing:
    """The dead letter of ``incoming`` after ``attempts`` attempts, failed for ``reason``."""
    now = amqp.now_us()
    extra: dict[str, FieldValue] = {
        amqp.REASON: reason,
        amqp.ATTEMPTS: attempts,
        amqp.FIRST_FAILED: incoming.first_failed_us or now,
        amqp.LAST_FAILED: now,
        amqp.DEAD_ID: f"{now:x}-{secrets.token_hex(4)}",
    }
    return _copy(incoming, names.dead(subscription), extra)


def redriven_copy(names: Names, subscription: str, incoming: amqp.Incoming) -> Outgoing:
    """A dead letter back in the subscription queue as a new message: attempts start again."""
    return _copy(incoming, names.queue(subscription), {})
