"""One delivery of the NATS broker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tidings.brokers.base import Message

if TYPE_CHECKING:
    from tidings.brokers.nats.consumer import NatsConsumer

__all__ = ["NatsDelivery", "Settle"]

Settle = Literal["ack", "retry", "dead"]


class NatsDelivery:
    """One hand-over of a message; settle it once with :meth:`ack`, :meth:`retry` or
    :meth:`dead_letter`. Settling after its lease ran out, or after its consumer closed and
    gave it back, changes nothing."""

    __slots__ = (
        "_consumer",
        "ack_subject",
        "deadline",
        "delivered",
        "given_back",
        "group",
        "ident",
        "message",
        "prior",
        "settled",
        "topic",
    )

    def __init__(
        self,
        consumer: NatsConsumer,
        message: Message,
        topic: str,
        ack_subject: str,
        group: tuple[str, str],
        ident: tuple[str, int],
        delivered: int,
        deadline: float,
        prior: int = 0,
    ) -> None:
        self._consumer = consumer
        self.message = message
        self.topic = topic
        self.ack_subject = ack_subject
        self.group = group
        """``(stream, consumer)`` of the durable consumer that made this delivery."""
        self.ident = ident
        """``(stream, sequence)`` of the message."""
        self.delivered = delivered
        """JetStream's ``num_delivered``."""
        self.prior = prior
        """Attempts made before the message was put back on the redrive subject uncounted."""
        self.deadline = deadline
        """When the lease runs out (monotonic)."""
        self.settled = False
        self.given_back = False

    @property
    def subscription(self) -> str:
        return self._consumer.subscription

    @property
    def attempt(self) -> int:
        return self.delivered + self.prior

    async def ack(self) -> None:
        await self._consumer.settle(self, "ack")

    async def retry(self, delay: float, reason: str) -> None:
        await self._consumer.settle(self, "retry", delay, reason)

    async def dead_letter(self, reason: str) -> None:
        await self._consumer.settle(self, "dead", 0.0, reason)

    def __repr__(self) -> str:
        return f"<nats delivery {self.message.id!r} attempt {self.attempt}>"
