"""What one :class:`~tidings.brokers.nats.NatsBroker` object shares with its consumers: the
connection, the JetStream API, publishing and settling, and what this object remembers about
the deliveries it gave back."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client

from tidings.brokers.base import Message
from tidings.brokers.nats import codec
from tidings.brokers.nats.api import JetStreamApi
from tidings.brokers.nats.codec import Encoded
from tidings.brokers.nats.names import Names
from tidings.brokers.nats.url import NatsOptions
from tidings.brokers.nats.wire import Replies, Settler, publish

if TYPE_CHECKING:
    from tidings.brokers.nats.consumer import NatsConsumer

__all__ = ["Core", "Failures", "Returns"]

TIMEOUT = 10.0
"""Longest wait for any answer of the server (PubAck, ack confirmation, API reply)."""

Ident = tuple[str, int]
"""A message in one stream: ``(stream, sequence)``."""


class Returns:
    """Deliveries this broker object gave back (closed consumers, retries), per subscription,
    until a consumer of this object receives them again or ``keep`` seconds after they
    became due. JetStream counts them as unacknowledged like any delivery in flight;
    :meth:`~tidings.brokers.nats.NatsBroker.depth` reports these as ready or delayed
    instead."""

    def __init__(self) -> None:
        self._by_sub: dict[str, dict[Ident, tuple[float, float]]] = {}

    def add(self, subscription: str, ident: Ident, delay: float, keep: float) -> None:
        now = time.monotonic()
        entries = self._by_sub.setdefault(subscription, {})
        if len(entries) >= 1024:
            _forget_old(entries, now)
        due = now + max(0.0, delay)
        entries[ident] = (due, due + keep)

    def seen(self, subscription: str, ident: Ident) -> None:
        entries = self._by_sub.get(subscription)
        if entries:
            entries.pop(ident, None)

    def counts(self, subscription: str) -> tuple[int, int]:
        """``(ready, delayed)`` among what this object gave back."""
        entries = self._by_sub.get(subscription, {})
        now = time.monotonic()
        _forget_old(entries, now)
        delayed = sum(1 for due, _ in entries.values() if due > now)
        return len(entries) - delayed, delayed


def _forget_old(entries: dict[Ident, tuple[float, float]], now: float) -> None:
    for ident in [i for i, (_, forget) in entries.items() if forget <= now]:
        del entries[ident]


class Failures:
    """When this broker object first saw each message fail (a retry), until it is acked or
    dead-lettered; the ``first_failed_at`` of a dead letter. Bounded: the oldest entries go
    first."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._first: dict[tuple[str, str, int], datetime] = {}

    def note(self, subscription: str, ident: Ident) -> None:
        key = (subscription, *ident)
        if key not in self._first:
            if len(self._first) >= self.LIMIT:
                del self._first[next(iter(self._first))]
            self._first[key] = datetime.now(UTC)

    def pop(self, subscription: str, ident: Ident) -> datetime | None:
        return self._first.pop((subscription, *ident), None)


class Core:
    def __init__(self, nc: Client, options: NatsOptions) -> None:
        self.nc = nc
        self.options = options
        self.names = Names(options.namespace)
        self.api = JetStreamApi(nc, TIMEOUT)
        self.replies = Replies(nc)
        self.settler = Settler(nc, self.replies, TIMEOUT)
        self.returns = Returns()
        self.failures = Failures()
        self.consumers: set[NatsConsumer] = set()

    def disconnected(self) -> None:
        """Publishes and settlements waiting for an answer fail now with
        :class:`~tidings.errors.BrokerUnavailable` instead of at their timeout."""
        self.replies.abandon()

    def reconnected(self) -> None:
        """The connection is back (perhaps to a restarted server that lost every open pull
        request): let every consumer ask again at once."""
        for consumer in self.consumers:
            consumer.reconnected()

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def publish(
        self,
        messages: Sequence[tuple[str, Encoded]],
        *,
        expected_last_subject_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        return await publish(self.nc, self.replies, messages, TIMEOUT, expected_last_subject_seq)

    async def dead_letter(
        self,
        subscription: str,
        topic: str,
        message: Message,
        ident: Ident,
        delivered: int,
        attempts: int,
        reason: str,
    ) -> None:
        """Store ``message`` in the dead letters of ``subscription``. Publishing the same
        delivery twice stores it once (JetStream deduplicates on the delivery)."""
        now = datetime.now(UTC)
        first = self.failures.pop(subscription, ident) or (now if attempts <= 1 else None)
        extra = {
            **codec.original_headers(message, topic),
            codec.H_REASON: reason,
            codec.H_ATTEMPTS: str(attempts),
            codec.H_LAST_FAILED: now.isoformat(),
        }
        if first is not None:
            extra[codec.H_FIRST_FAILED] = first.isoformat()
        dedup = f"dead:{subscription}:{ident[0]}:{ident[1]}:{delivered}"
        encoded = codec.encode(message, self.max_payload, extra, msg_id=dedup)
        await self.publish([(self.names.dead_subject(subscription), encoded)])
