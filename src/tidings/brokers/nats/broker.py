"""The :class:`NatsBroker`: the broker protocol over NATS JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import weakref
from collections.abc import Callable, Sequence

import nats
import nats.errors
from nats.aio.client import Client

from tidings.brokers.base import (
    Capabilities,
    ClosesOnExit,
    Consumer,
    DeadLetter,
    Depth,
    Message,
    Tail,
)
from tidings.brokers.nats import admin, catalog, codec
from tidings.brokers.nats.api import NotFound
from tidings.brokers.nats.consumer import NatsConsumer
from tidings.brokers.nats.core import Core
from tidings.brokers.nats.tail import NatsTail
from tidings.brokers.nats.url import NatsOptions, parse_url
from tidings.brokers.nats.wire import NoStream
from tidings.errors import BrokerUnavailable, ConfigurationError, UnknownTopic
from tidings.topology import EVENT_TYPE_PATTERN, NAME_PATTERN, Topology

__all__ = ["CAPABILITIES", "NatsBroker"]

CAPABILITIES = Capabilities(per_key_order=False, leases=True, durable=True, multi_process=True)

log = logging.getLogger("tidings.brokers.nats")

_TOPIC = re.compile(NAME_PATTERN)
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
_NOW = 2**62
"""A stream sequence past any message: routes judged by the filter in force now."""


class NatsBroker(ClosesOnExit):
    """A :class:`~tidings.brokers.base.Broker` on NATS JetStream. Open it with :meth:`open`
    (or :func:`tidings.brokers.connect`); see :mod:`tidings.brokers.nats` for the design and
    what it promises."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._tails: weakref.WeakSet[NatsTail] = weakref.WeakSet()
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> NatsBroker:
        """Connect to the servers ``url`` names. Raises :class:`ConfigurationError` for a
        bad URL or refused credentials and :class:`BrokerUnavailable` when no server
        answers (each is tried twice) or JetStream is not enabled."""
        options = parse_url(url)
        cores: list[Core] = []

        def connection(up: bool) -> None:
            for core in cores:
                if up:
                    core.reconnected()
                else:
                    core.disconnected()

        nc = await _connect(options, connection)
        core = Core(nc, options)
        cores.append(core)
        try:
            await core.replies.start()
            await core.api.call("INFO")
        except BaseException:
            await nc.close()
            raise
        return cls(core)

    @property
    def options(self) -> NatsOptions:
        return self._core.options

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def declare(self, topology: Topology) -> None:
        await admin.declare(self._core, topology)

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Publish every message concurrently and return once JetStream acknowledged each
        (stored on the stream's replicas; see the fsync caveat in :mod:`tidings.brokers.nats`)."""
        if not _TOPIC.match(topic):
            raise UnknownTopic(topic)
        core = self._core
        batch = []
        for message in messages:
            if not _EVENT_TYPE.match(message.event_type):
                raise ValueError(
                    f"message {message.id!r}: event type {message.event_type!r} is not a "
                    "valid event type name"
                )
            subject = core.names.subject(topic, message.event_type)
            batch.append((subject, codec.encode(message, core.max_payload)))
        if not batch:
            return
        try:
            await core.publish(batch)
        except NoStream:
            await self._no_stream(topic)

    async def _no_stream(self, topic: str) -> None:
        """Nothing answered a publish to ``topic``: either its stream does not exist, or
        JetStream is not serving it right now (starting up, electing a leader)."""
        try:
            await self._core.api.stream_info(self._core.names.topic_stream(topic))
        except NotFound:
            raise UnknownTopic(topic) from None
        raise BrokerUnavailable(f"NATS: the stream of topic {topic!r} did not answer")

    def consume(self, subscription: str, *, prefetch: int | None = None) -> Consumer:
        return NatsConsumer(self._core, subscription, prefetch)

    async def depth(self, subscription: str) -> Depth:
        return await admin.depth(self._core, subscription)

    async def dead_letters(self, subscription: str, *, limit: int = 100) -> list[DeadLetter]:
        return await admin.dead_letters(self._core, subscription, max(0, limit))

    async def redrive(self, subscription: str, ids: Sequence[str] | None = None) -> int:
        return await admin.redrive(self._core, subscription, ids)

    async def purge(self, subscription: str) -> int:
        return await admin.purge(self._core, subscription)

    async def deliver(self, subscription: str, messages: Sequence[Message], *, topic: str) -> int:
        """Publish the messages the subscription accepts from ``topic`` now (its record's
        routes) to its redrive subject, which only its own redrive consumer reads, the way
        :meth:`redrive` does. Each call's copies get ids of their own, so that delivering
        the same messages again within the duplicate window is not dropped."""
        core = self._core
        policy = await catalog.load(core.api, core.names, subscription)
        subject, call = core.names.redrive_subject(subscription), secrets.token_hex(6)
        batch = [
            (
                subject,
                codec.encode(
                    m,
                    core.max_payload,
                    codec.original_headers(m, topic),
                    msg_id=f"deliver:{call}:{m.id}",
                ),
            )
            for m in messages
            if policy.accepts(topic, m.event_type, _NOW)
        ]
        if batch:
            await core.publish(batch)
        return len(batch)

    def tail(self, topic: str) -> Tail:
        """An ephemeral ordered consumer on the topic's stream (see
        :mod:`tidings.brokers.nats.tail`)."""
        tail = NatsTail(self._core, topic)
        self._tails.add(tail)
        return tail

    async def delete_namespace(self) -> None:
        """Delete every stream (with its consumers, messages and dead letters) of this
        broker's namespace. For tests and for tearing a deployment down; nothing else
        ever deletes a stream."""
        await admin.delete_namespace(self._core)

    async def close(self) -> None:
        """Close every consumer and tail of this broker object (unsettled deliveries come
        back at once), wait for pending settlements and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        core = self._core
        await asyncio.gather(*(c.close() for c in list(core.consumers)))
        await asyncio.gather(*(t.close() for t in list(self._tails)))
        await core.settler.close()
        await core.replies.close()
        with contextlib.suppress(Exception):
            await core.nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await core.nc.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<NatsBroker {self._core.options!r}{state}>"


async def _connect(options: NatsOptions, connection: Callable[[bool], None]) -> Client:
    """Connect, trying each server twice; once connected, reconnect for as long as it
    takes."""

    async def on_error(exc: Exception) -> None:
        level = logging.DEBUG if isinstance(exc, OSError | TimeoutError) else logging.WARNING
        log.log(level, "NATS: %s: %s", type(exc).__name__, exc)

    async def on_disconnected() -> None:
        if not nc.is_closed:
            log.warning("NATS: disconnected")
            connection(False)

    async def on_reconnected() -> None:
        log.warning("NATS: reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")
        connection(True)

    try:
        nc = await nats.connect(
            servers=list(options.servers),
            name="tidings",
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
    except nats.errors.AuthorizationError as exc:
        raise ConfigurationError(f"NATS {options!r}: credentials refused: {exc}") from None
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BrokerUnavailable(f"NATS {options!r}: cannot connect: {exc}") from None
    nc.options["max_reconnect_attempts"] = -1  # from now on, never give up
    return nc
