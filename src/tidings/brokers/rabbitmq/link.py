"""The broker object's connection: opened on demand, opened again after it drops, and the
publisher-confirmed channel every publish goes through.

aio-pika opens connections and channels; the frames of the per-message path (publish, ack,
consume) go through its underlying aiormq channel, which lets many publishes share the wire
while each waits for its own confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from tidings.brokers.rabbitmq.url import RabbitOptions
from tidings.errors import BrokerError, BrokerUnavailable

__all__ = [
    "CONNECT_TIMEOUT",
    "Link",
    "Outgoing",
    "Wire",
    "broker_error",
    "is_not_found",
    "unless_closed",
]

Wire = aiormq.Channel
"""The aiormq channel under an aio-pika channel."""

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
CONFIRM_TIMEOUT = 60.0
"""Longest wait for the confirms of one publish call before it counts as failed."""

_REFUSALS = (
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.ConnectionNotAllowed,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.DeliveryError,
)


def broker_error(exc: BaseException, what: str) -> BrokerError:
    """``exc`` (raised by the AMQP client during ``what``) as a tidings error: a refusal by
    the broker is a :class:`BrokerError`, anything else (connection or channel lost, timeout)
    :class:`BrokerUnavailable`."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, _REFUSALS):
        return BrokerError(f"RabbitMQ refused {what}: {exc}")
    detail = str(exc) or type(exc).__name__
    return BrokerUnavailable(f"RabbitMQ unavailable during {what}: {detail}")


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: where, and its AMQP body and properties. ``mandatory``
    messages that reach no queue come back and fail the publish; the broker's own copies
    (retries, dead letters, records) are mandatory, a missing queue must not lose them."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Basic.Properties
    mandatory: bool = True


class Link:
    """One AMQP connection shared by a broker object's publishes, admin work and consumers
    (each consumer on its own channel). A dropped connection is opened again by the next
    user; until the server answers, users get :class:`BrokerUnavailable`."""

    def __init__(self, options: RabbitOptions) -> None:
        self.options = options
        self._connection: AbstractConnection | None = None
        self._publisher: tuple[AbstractChannel, Wire] | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def connection(self) -> AbstractConnection:
        if self.closed:
            raise BrokerError(f"the broker object for {self.options.display_url} is closed")
        connection = self._connection
        if _usable(connection):
            assert connection is not None
            return connection
        async with self._lock:
            if self.closed:
                raise BrokerError(f"the broker object for {self.options.display_url} is closed")
            if not _usable(self._connection):
                await self._drop()
                self._connection = await self._connect()
            assert self._connection is not None
            return self._connection

    async def _drop(self) -> None:
        """Let go of a connection that the server or the network closed."""
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _connect(self) -> AbstractConnection:
        try:
            return await aio_pika.connect(self.options.client_url, timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            raise broker_error(exc, f"connecting to {self.options.display_url}") from exc

    async def channel(self, *, confirms: bool = False) -> tuple[AbstractChannel, Wire]:
        """A new channel; the caller closes it."""
        connection = await self.connection()
        try:
            channel = await connection.channel(publisher_confirms=confirms)
            return channel, await _wire(channel)
        except Exception as exc:
            raise broker_error(exc, "opening a channel") from exc

    @contextlib.asynccontextmanager
    async def session(self, what: str) -> AsyncIterator[Wire]:
        """A channel for one piece of admin work, closed afterwards. AMQP errors inside
        become :class:`BrokerError` (:func:`is_not_found` ones pass through for the caller)."""
        channel, wire = await self.channel()
        try:
            yield wire
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError, RuntimeError) as exc:
            if is_not_found(exc):
                raise
            raise broker_error(exc, what) from exc
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def publisher(self) -> Wire:
        current = self._publisher
        if current is not None and not current[1].is_closed:
            return current[1]
        async with self._lock:
            current = self._publisher
            if current is None or current[1].is_closed:
                self._publisher = current = await self._open_publisher()
        return current[1]

    async def _open_publisher(self) -> tuple[AbstractChannel, Wire]:
        if not _usable(self._connection):
            await self._drop()
            self._connection = await self._connect()
        connection = self._connection
        assert connection is not None
        try:
            channel = await connection.channel(publisher_confirms=True)
            return channel, await _wire(channel)
        except Exception as exc:
            raise broker_error(exc, "opening the publishing channel") from exc

    async def publish(self, items: Sequence[Outgoing], what: str = "a publish") -> None:
        """Publish ``items`` (pipelined, in order) and return once RabbitMQ confirmed every
        one. Raises :class:`BrokerError` when one was refused (nack) and
        :class:`BrokerUnavailable` when a confirm did not come (some may have been taken).
        A mandatory item that reached no queue is a :class:`BrokerError`.
        :func:`is_not_found` errors (no such exchange) pass through."""
        if not items:
            return
        wire = await self.publisher()
        confirms = asyncio.gather(
            *(
                wire.basic_publish(
                    item.body,
                    exchange=item.exchange,
                    routing_key=item.routing_key,
                    properties=item.properties,
                    mandatory=item.mandatory,
                    wait=False,
                )
                for item in items
            ),
            return_exceptions=True,
        )
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                results = await unless_closed(wire, confirms, what)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"RabbitMQ did not confirm {what} in time") from exc
        for result in results:
            if isinstance(result, BaseException):
                if is_not_found(result):
                    raise result
                raise broker_error(result, what) from result
            if not isinstance(result, Basic.Ack):
                raise BrokerError(f"RabbitMQ routed {what} to no queue")

    async def close(self) -> None:
        """Close the connection (RabbitMQ gives back what its consumers held). Idempotent."""
        self.closed = True
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()


async def unless_closed(wire: Wire, work: asyncio.Future[T], what: str) -> T:
    """``work``'s result, unless ``wire`` closes first: then ``work`` is cancelled and
    :class:`BrokerUnavailable` raised. (aiormq queues frames for its writer in a bounded
    queue; a write into the queue of a connection that died waits forever.)"""
    closing = wire.closing
    try:
        await asyncio.wait({work, closing}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        closing.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    raise BrokerUnavailable(f"the channel closed during {what}")


def _usable(connection: AbstractConnection | None) -> bool:
    """aio-pika marks a connection closed only when closed by its user; one that the server
    or the network closed is just no longer connected."""
    return connection is not None and not connection.is_closed and connection.connected.is_set()


async def _wire(channel: AbstractChannel) -> Wire:
    wire = await channel.get_underlay_channel()
    if not isinstance(wire, Wire):
        raise BrokerError(f"unexpected AMQP channel type {type(wire).__name__}")
    return wire
