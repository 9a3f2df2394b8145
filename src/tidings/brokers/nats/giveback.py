"""What a consumer does with deliveries it will not see settled: give them back, put them
back uncounted, or give up on them (dead-letter)."""

from __future__ import annotations

import asyncio
import logging

from tidings.brokers.nats import codec
from tidings.brokers.nats.catalog import Policy
from tidings.brokers.nats.core import Core
from tidings.brokers.nats.delivery import NatsDelivery
from tidings.errors import BrokerError

__all__ = ["confirmed", "give_back", "give_up", "put_back"]

log = logging.getLogger("tidings.brokers.nats")


async def confirmed(future: asyncio.Future[None] | None) -> None:
    """Wait for a settlement the :class:`~tidings.brokers.nats.wire.Settler` sent."""
    if future is not None:
        await future


async def give_back(core: Core, subscription: str, delivery: NatsDelivery, policy: Policy) -> None:
    """Redeliver at once (a NAK): the attempt counts."""
    core.returns.add(subscription, delivery.ident, 0.0, keep=policy.lease_seconds)
    await confirmed(core.settler.send(delivery.ack_subject, b"-NAK", delivery.group))


async def put_back(
    core: Core, subscription: str, deliveries: list[NatsDelivery], policy: Policy
) -> None:
    """Return deliveries that were fetched but never handed out, without counting an attempt
    (JetStream counted one when it sent them): copy each to the subscription's redrive
    subject with the attempts made before, then ack the original. If the copy fails, give
    them back instead (counting one)."""
    copies = []
    for delivery in deliveries:
        extra = codec.original_headers(delivery.message, delivery.topic)
        extra[codec.H_PRIOR] = str(delivery.attempt - 1)
        stream, seq = delivery.ident
        dedup = f"back:{subscription}:{stream}:{seq}:{delivery.delivered}"
        encoded = codec.encode(delivery.message, core.max_payload, extra, msg_id=dedup)
        copies.append((core.names.redrive_subject(subscription), encoded))
    try:
        await core.publish(copies)
    except BrokerError as exc:
        log.warning("could not put back %d deliveries uncounted: %s", len(copies), exc)
        await asyncio.gather(*(give_back(core, subscription, d, policy) for d in deliveries))
        return
    await asyncio.gather(
        *(confirmed(core.settler.send(d.ack_subject, b"+ACK", d.group)) for d in deliveries)
    )


async def give_up(
    core: Core, subscription: str, delivery: NatsDelivery, attempts: int, reason: str
) -> None:
    """Dead-letter ``delivery`` with ``reason``. On failure it stays unsettled and comes back
    after its lease."""
    delivery.settled = True
    try:
        await core.dead_letter(
            subscription,
            delivery.topic,
            delivery.message,
            delivery.ident,
            delivery.delivered,
            attempts,
            reason,
        )
        await confirmed(core.settler.send(delivery.ack_subject, b"+ACK", delivery.group))
    except BrokerError as exc:
        log.warning("could not dead-letter %r (it will come back): %s", delivery, exc)
