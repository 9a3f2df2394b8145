"""Tails of the RabbitMQ broker: an exclusive, auto-deleted, server-named queue bound to the
topic's exchange with ``#`` (every event type), consumed without acknowledgements on a
channel of its own. RabbitMQ deletes the queue when the tail cancels its consumer or its
connection goes; closing also deletes it outright."""

from __future__ import annotations

import asyncio
import contextlib

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from tidings.brokers.rabbitmq import wire as amqp
from tidings.brokers.rabbitmq.hub import Hub
from tidings.brokers.rabbitmq.link import Wire, broker_error, is_not_found
from tidings.brokers.tails import QueueTail
from tidings.errors import BrokerUnavailable, UnknownTopic

__all__ = ["RabbitTail"]


class RabbitTail(QueueTail):
    """See the module docstring. A lost channel or connection ends the iteration with
    :class:`BrokerUnavailable` (the queue went with it)."""

    def __init__(self, hub: Hub, topic: str) -> None:
        super().__init__(topic)
        self._hub = hub
        self._channel: AbstractChannel | None = None
        self._wire: Wire | None = None
        self.queue = ""

    async def _open(self) -> None:
        channel, wire = await self._hub.link.channel()
        self._channel, self._wire = channel, wire
        exchange = self._hub.names.exchange(self.topic)
        try:
            await wire.exchange_declare(exchange, passive=True)
            ok = await wire.queue_declare("", exclusive=True, auto_delete=True)
            assert ok is not None
            self.queue = ok.queue or ""
            await wire.queue_bind(self.queue, exchange, routing_key="#")
            await wire.basic_consume(self.queue, self._receive, no_ack=True, exclusive=True)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await channel.close()
            if is_not_found(exc):
                raise UnknownTopic(self.topic) from None
            if isinstance(exc, aiormq.exceptions.AMQPError | OSError):
                raise broker_error(exc, f"tailing {self.topic}") from exc
            raise
        wire.closing.add_done_callback(self._lost)

    async def _receive(self, delivered: DeliveredMessage) -> None:
        self.put(amqp.decode(delivered, self._hub.names).message)

    def _lost(self, _: asyncio.Future[None]) -> None:
        self.fail(BrokerUnavailable(f"RabbitMQ: the tail of {self.topic} lost its channel"))

    async def _shut(self) -> None:
        wire, channel = self._wire, self._channel
        if wire is None or channel is None:
            return
        wire.closing.remove_done_callback(self._lost)
        with contextlib.suppress(Exception):
            await wire.queue_delete(self.queue)
        with contextlib.suppress(Exception):
            await channel.close()

    async def exists(self) -> bool:
        """Whether the tail's queue is on the server (for tests of what a tail leaves)."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                wire = await stack.enter_async_context(self._hub.link.session("a tail check"))
                await wire.queue_declare(self.queue, passive=True)
            except aiormq.exceptions.AMQPError as exc:
                if is_not_found(exc):
                    return False
                raise
        return True
