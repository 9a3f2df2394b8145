"""Consumers of the RabbitMQ broker.

A consumer owns one channel at a time with ``basic.qos(prefetch)`` and one AMQP consumer on
the subscription queue (a :class:`~tidings.brokers.rabbitmq.session.Session`). RabbitMQ pushes
at most ``prefetch`` unacknowledged messages; the consumer hands them out in arrival order.
When the channel or connection dies, RabbitMQ gives back everything the channel held; the
consumer forgets that session (settling its deliveries is a no-op) and opens a new channel,
retrying with backoff until the server answers again. Its iteration never ends because of a
lost connection; only :class:`~tidings.errors.UnknownSubscription` (the queue does not exist)
and refusals (:class:`~tidings.errors.BrokerError`, e.g. access refused) end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Self

from tidings.brokers.base import ClosesOnExit, Delivery
from tidings.brokers.rabbitmq.hub import Hub
from tidings.brokers.rabbitmq.link import broker_error, is_not_found
from tidings.brokers.rabbitmq.records import Policy
from tidings.brokers.rabbitmq.session import Session
from tidings.errors import BrokerError, BrokerUnavailable, UnknownSubscription

__all__ = ["RabbitConsumer"]

log = logging.getLogger("tidings.brokers.rabbitmq")

_RECONNECT_FIRST, _RECONNECT_MAX = 0.05, 2.0


class RabbitConsumer(ClosesOnExit):
    """Deliveries of one subscription, at most ``prefetch`` unsettled at once (default: the
    subscription's ``in_flight``). Closing gives back what it holds (see
    :meth:`Session.give_back <tidings.brokers.rabbitmq.session.Session.give_back>`)."""

    def __init__(self, hub: Hub, subscription: str, prefetch: int | None) -> None:
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.subscription = subscription
        self._hub = hub
        self._prefetch = prefetch
        self._policy: Policy | None = None
        self._session: Session | None = None
        self._wake = asyncio.Event()
        self._started: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._error: BrokerError | None = None
        self._closed = False

    @property
    def handed(self) -> int:
        """Deliveries handed out and not settled."""
        return self._session.handed if self._session is not None else 0

    @property
    def waiting(self) -> int:
        """Deliveries received from RabbitMQ and not handed out yet."""
        return self._session.waiting if self._session is not None else 0

    async def until_quiet(self) -> None:
        """Wait (a moment at most) for deliveries RabbitMQ is still pushing here."""
        if self._session is not None:
            await self._session.until_quiet()

    def _max_attempts(self) -> int:
        policy = self._hub.policies.get(self.subscription) or self._policy or Policy()
        return policy.max_attempts

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        await self._start()
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            if self._session is not None and (delivery := self._session.next()) is not None:
                return delivery
            self._wake.clear()
            await self._wake.wait()

    async def _start(self) -> None:
        if self._closed:
            return
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._started.add_done_callback(_retrieve)
            self._hub.consumers.add(self)
            self._runner = asyncio.create_task(
                self._run(), name=f"tidings-rabbitmq-consumer-{self.subscription}"
            )
        await asyncio.shield(self._started)

    async def _run(self) -> None:
        pause = _RECONNECT_FIRST
        while not self._closed:
            try:
                if self._policy is None:
                    self._policy = await self._hub.policy(self.subscription)
                session = await self._open(self._policy)
            except BrokerUnavailable as exc:
                log.warning("consumer of %s cannot reach RabbitMQ: %s", self.subscription, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RECONNECT_MAX)
                continue
            except BrokerError as exc:
                self._fail(exc)
                return
            pause = _RECONNECT_FIRST
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            await asyncio.wait({session.wire.closing})
            if self._session is session:
                self._session = None
            self._wake.set()

    async def _open(self, policy: Policy) -> Session:
        channel, wire = await self._hub.link.channel()
        limit = self._prefetch or policy.in_flight
        session = Session(
            self._hub, self.subscription, channel, wire, limit, self._max_attempts, self._wake.set
        )
        try:
            await wire.basic_qos(prefetch_count=limit)
            self._session = session
            queue = self._hub.names.queue(self.subscription)
            ok = await wire.basic_consume(queue, session.receive)
        except Exception as exc:
            self._session = None
            with contextlib.suppress(Exception):
                await channel.close()
            if is_not_found(exc):
                raise UnknownSubscription(self.subscription) from None
            raise broker_error(exc, f"consuming {self.subscription}") from exc
        session.consumer_tag = ok.consumer_tag or ""
        # RabbitMQ cancels a consumer whose queue was deleted: close the channel, so that the
        # next one finds out whether the queue still exists.
        wire.on_consumer_cancel_callbacks.add(
            lambda _frame: asyncio.ensure_future(channel.close()).add_done_callback(_retrieve)
        )
        return session

    def _fail(self, exc: BrokerError) -> None:
        self._error = exc
        if self._started is not None and not self._started.done():
            self._started.set_exception(exc)
        self._wake.set()

    async def close(self) -> None:
        """Stop, and give back what is held. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._hub.consumers.discard(self)
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        session = self._session
        if session is not None and session.alive:
            with contextlib.suppress(Exception):
                await session.give_back()
        self._session = None
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if session is not None:
            with contextlib.suppress(Exception):
                await session.channel.close()

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RabbitConsumer {self.subscription!r}{state}>"


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
