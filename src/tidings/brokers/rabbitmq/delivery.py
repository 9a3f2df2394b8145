"""A delivery of the RabbitMQ broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings.brokers.base import Message
from tidings.brokers.rabbitmq.wire import Incoming

if TYPE_CHECKING:
    from tidings.brokers.rabbitmq.session import Session

__all__ = ["RabbitDelivery"]


class RabbitDelivery:
    """One hand-over of a message. Settle it once with :meth:`ack`, :meth:`retry` or
    :meth:`dead_letter`; after its channel is gone (consumer closed, connection lost) settling
    changes nothing, because RabbitMQ has already given the message back."""

    __slots__ = ("_settled", "incoming", "session", "tag")

    def __init__(self, session: Session, tag: int, incoming: Incoming) -> None:
        self.session = session
        self.tag = tag
        self.incoming = incoming
        self._settled = False

    @property
    def message(self) -> Message:
        return self.incoming.message

    @property
    def topic(self) -> str:
        return self.incoming.topic

    @property
    def subscription(self) -> str:
        return self.session.subscription

    @property
    def attempt(self) -> int:
        return self.incoming.attempt

    async def ack(self) -> None:
        self._settle()
        await self.session.ack(self)

    async def retry(self, delay: float, reason: str) -> None:
        self._settle()
        await self.session.retry(self, delay, reason)

    async def dead_letter(self, reason: str) -> None:
        self._settle()
        await self.session.dead_letter(self, reason)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError(f"delivery of message {self.message.id!r} is already settled")
        self._settled = True

    def __repr__(self) -> str:
        return f"<rabbitmq delivery {self.message.id!r} attempt {self.attempt}>"
