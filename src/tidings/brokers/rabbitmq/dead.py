"""Dead letters (``NS.S.dead``): listing, redriving and purging them.

A dead letter is a copy of the message (same id, body, type, key and headers) with the reason,
the attempt count, the first and last failure times and a dead-letter id in ``x-tidings-*``
headers (see :func:`~tidings.brokers.rabbitmq.copies.dead_copy`). Listing and redrive take
every dead letter of the subscription unacknowledged and give back what they keep, so they
cost one round trip per dead letter; a listing that runs while another listing or redrive of
the same subscription holds them sees fewer.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiormq.abc import DeliveredMessage

from tidings.brokers.base import DeadLetter
from tidings.brokers.rabbitmq import wire as amqp
from tidings.brokers.rabbitmq.admin import exists
from tidings.brokers.rabbitmq.copies import redriven_copy
from tidings.brokers.rabbitmq.link import Link
from tidings.brokers.rabbitmq.names import Names
from tidings.brokers.rabbitmq.records import give_back, take_all

__all__ = ["dead_letters", "purge", "redrive"]


def _oldest_first(
    taken: list[DeliveredMessage], names: Names, subscription: str
) -> list[tuple[DeliveredMessage, DeadLetter]]:
    """By last failure time, then by position in the queue."""
    letters = [(d, amqp.dead_letter_of(d, subscription, names)) for d in taken]
    order = sorted(range(len(letters)), key=lambda i: (letters[i][1].last_failed_at, i))
    return [letters[i] for i in order]


async def dead_letters(link: Link, names: Names, subscription: str, limit: int) -> list[DeadLetter]:
    async with link.session(f"listing the dead letters of {subscription}") as wire:
        await exists(wire, names, subscription)
        taken = await take_all(wire, names.dead(subscription))
        letters = _oldest_first(taken, names, subscription)
        await give_back(wire, names.dead(subscription), taken)
    return [letter for _, letter in letters[: max(limit, 0)]]


async def redrive(link: Link, names: Names, subscription: str, ids: Sequence[str] | None) -> int:
    """Publish the chosen dead letters to the subscription queue as new messages (no attempt
    header: counting starts again), oldest first, then delete them from the dead letters."""
    wanted = None if ids is None else set(ids)
    async with link.session(f"redriving the dead letters of {subscription}") as wire:
        await exists(wire, names, subscription)
        taken = await take_all(wire, names.dead(subscription))
        letters = _oldest_first(taken, names, subscription)
        chosen = [d for d, letter in letters if wanted is None or letter.id in wanted]
        moving = {id(d) for d in chosen}
        kept = [d for d in taken if id(d) not in moving]
        copies = [redriven_copy(names, subscription, amqp.decode(d, names)) for d in chosen]
        await link.publish(copies, "redriven dead letters")
        for delivered in chosen:
            if delivered.delivery_tag is not None:
                await wire.basic_ack(delivered.delivery_tag)
        await give_back(wire, names.dead(subscription), kept)
    return len(chosen)


async def purge(link: Link, names: Names, subscription: str) -> int:
    async with link.session(f"purging the dead letters of {subscription}") as wire:
        await exists(wire, names, subscription)
        ok = await wire.queue_purge(names.dead(subscription))
    return ok.message_count or 0
