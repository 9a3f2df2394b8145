"""The broker protocol: the whole contract every backend keeps.

Words used below:

* **published**: :meth:`Broker.publish` returned. The broker holds the messages durably (to the
  durability the backend documents) and every subscription that existed at that moment and
  accepts the message's topic and event type will receive each of them. A subscription
  declared later receives only what is published after it exists. If ``publish`` raises,
  any subset of the batch may have been taken: publishing is at least once, and the message
  ``id`` lets consumers drop duplicates.
* **delivery**: one hand-over of one message to one consumer of one subscription. A message
  is given to one consumer of a subscription at a time (competing consumers share the work).
* **settled**: the consumer called exactly one of :meth:`Delivery.ack`,
  :meth:`Delivery.retry` or :meth:`Delivery.dead_letter`. Until then the delivery counts
  against the consumer's ``prefetch``. An unsettled delivery comes back (to this or another
  consumer, with ``attempt`` one higher) when its consumer closes, its connection drops, its
  process dies, or, on backends with leases, its lease runs out.
* **attempt**: how many times this message has been delivered to this subscription, this
  delivery included (1 on the first). When the delivery that was the ``max_attempts``-th
  comes back unsettled (a consumer that crashes on it every time), the broker dead-letters
  it with a reason saying so; :meth:`Delivery.retry` on that last attempt dead-letters too,
  with the reason given.
* **lease**: on backends with leases, a delivery is a deadline, not a lock held while the
  consumer lives: ``lease_seconds`` after it was handed out it comes back, whatever its
  consumer is doing, and a settle after that is a no-op. ``lease_seconds`` must therefore
  exceed the longest time a consumer holds a delivery; the listener runtime takes a
  delivery only when it can start on it.
* **order**: when :attr:`Capabilities.per_key_order` is true, deliveries of messages with the
  same non-empty ``key`` in one subscription are handed out in publish order, and the next is
  not handed out while an earlier one is unsettled or waiting for its retry. Messages with
  other keys are not held back by it. A dead-lettered message no longer holds its key.
  Messages handed to one subscription with :meth:`Broker.deliver` take their place in that
  order as if published at that moment.
* **tail**: a live copy of what is published to a topic from the moment the tail opened, for
  watching (:meth:`Broker.tail`). A tail is not a subscription: it holds no durable state,
  settles nothing, takes nothing away from any subscription and never slows one down. It
  sees what is published while it is open, at most once; it may miss messages while its
  connection is down, and it leaves nothing on the broker once closed.

Thread/task safety: a broker object may be used by many tasks of one event loop at once.
It is not shared across event loops or threads. Deliveries belong to the loop that made them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from tidings.topology import Topology

__all__ = [
    "Broker",
    "Capabilities",
    "ClosesOnExit",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "Depth",
    "Message",
    "Tail",
]


@dataclass(frozen=True, slots=True)
class Message:
    """What a broker carries: opaque bytes plus what it routes, orders and dedupes by.

    ``id`` is unique per message (tidings uses the event id). ``event_type`` selects the
    subscriptions (filters). ``key`` orders (the entity id); empty means no ordering.
    ``headers`` are small string metadata carried beside the body.
    """

    id: str
    event_type: str
    key: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend promises beyond the common contract. Tests read these flags instead of
    skipping silently; users read them to choose a backend."""

    per_key_order: bool
    """Same-key messages are delivered in publish order, one at a time per subscription."""
    leases: bool
    """An unsettled delivery comes back after ``lease_seconds`` even if its consumer lives
    (see *lease* in the module docstring)."""
    durable: bool
    """Published and unsettled messages survive closing and reopening the broker."""
    multi_process: bool
    """Consumers in several OS processes can share a subscription."""
    shared_depth: bool = True
    """:meth:`Broker.depth` counts ``in_flight`` deliveries held by every consumer, in any
    process; when false it counts only those of this broker object's own consumers."""


@dataclass(frozen=True, slots=True)
class Depth:
    """How much waits in one subscription."""

    ready: int
    """Deliverable now."""
    in_flight: int
    """Handed to a consumer, not yet settled."""
    delayed: int
    """Waiting for a retry delay to pass."""
    dead: int
    """In the subscription's dead letters."""

    @property
    def pending(self) -> int:
        """Everything not yet processed, dead letters excluded."""
        return self.ready + self.in_flight + self.delayed


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a subscription gave up on, with why and how often it was tried."""

    id: str
    """Dead-letter id, unique in the subscription; what :meth:`Broker.redrive` takes."""
    subscription: str
    topic: str
    message: Message
    reason: str
    attempts: int
    first_failed_at: datetime | None
    last_failed_at: datetime


class ClosesOnExit:
    """``async with`` for brokers and consumers: entering returns the object itself, leaving
    calls its ``close()``."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@runtime_checkable
class Delivery(Protocol):
    """One message handed to one consumer. Settle it exactly once; a second settle raises
    :class:`RuntimeError`."""

    @property
    def message(self) -> Message: ...

    @property
    def topic(self) -> str: ...

    @property
    def subscription(self) -> str: ...

    @property
    def attempt(self) -> int:
        """1 on the first delivery of this message to this subscription."""
        ...

    async def ack(self) -> None:
        """Done: the message will not be delivered to this subscription again."""

    async def retry(self, delay: float, reason: str) -> None:
        """Deliver again after ``delay`` seconds (to any consumer), counting an attempt.
        Other messages keep flowing meanwhile (other keys at once; same key after it)."""

    async def dead_letter(self, reason: str) -> None:
        """Give up: move the message to the subscription's dead letters with ``reason`` and
        the attempt count."""


class Consumer(Protocol):
    """An async iterator of deliveries from one subscription; close it (or use it as an async
    context manager) to stop. Holds at most ``prefetch`` unsettled deliveries at once: the
    iterator waits while that many are unsettled. Unsettled deliveries come back to the
    subscription after close; settling them after close is allowed and may be a no-op."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def __anext__(self) -> Delivery: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Tail(Protocol):
    """What :meth:`Broker.tail` returns: an async context manager that, once entered, is an
    async iterator of the messages published to one topic from then on, in the order the
    broker took them (per ``key`` at least). Leaving it (or :meth:`close`) stops the
    iteration and removes everything the tail made on the broker.

    Raises :class:`~tidings.errors.UnknownTopic` on entry (or first use) for an undeclared
    topic, and :class:`~tidings.errors.BrokerUnavailable` from iteration when the connection
    is lost: a tail does not come back by itself, since what was published meanwhile is
    gone for it."""

    @property
    def topic(self) -> str: ...

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def __anext__(self) -> Message: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Broker(Protocol):
    """Topics in, subscriptions out. Pick a backend by URL with
    :func:`tidings.brokers.connect`."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def declare(self, topology: Topology) -> None:
        """Create what ``topology`` names and update the policies of what exists. Idempotent.
        Never deletes a topic or subscription, and never drops a message."""

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Return once every message is published (see the module docstring). Raises
        :class:`~tidings.errors.UnknownTopic` for an undeclared topic and
        :class:`~tidings.errors.BrokerUnavailable` when the broker cannot take them."""

    def consume(self, subscription: str, *, prefetch: int | None = None) -> Consumer:
        """Deliveries of ``subscription``, at most ``prefetch`` unsettled at once (default:
        the subscription's ``in_flight``). Raises
        :class:`~tidings.errors.UnknownSubscription` on first use if it was never declared."""

    async def depth(self, subscription: str) -> Depth:
        """Counts of what waits in ``subscription``."""

    async def dead_letters(self, subscription: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``subscription``, oldest first."""

    async def redrive(self, subscription: str, ids: Sequence[str] | None = None) -> int:
        """Move dead letters (all, or those with ``ids``) back to ``subscription`` as new
        deliveries (attempt counting starts again). Returns how many moved."""

    async def purge(self, subscription: str) -> int:
        """Delete every dead letter of ``subscription``. Returns how many."""

    async def deliver(self, subscription: str, messages: Sequence[Message], *, topic: str) -> int:
        """Hand ``messages`` to ``subscription`` alone, as if just published to ``topic``:
        new deliveries (attempt 1) that no other subscription receives, with their place in
        per-key order where the backend keeps one. Messages the subscription does not accept
        from ``topic`` (its topics and event types as declared now) are skipped, so this
        never delivers what a publish would not have. Returns how many were handed over.

        Returns like :meth:`publish`: once they are taken durably (at least once; a retried
        call may deliver twice, and the message ``id`` lets consumers drop duplicates).
        Raises :class:`~tidings.errors.UnknownSubscription` for an undeclared subscription.
        The way to replay archived events to one consumer, e.g. to backfill a new one."""

    def tail(self, topic: str) -> Tail:
        """Follow ``topic`` live: see :class:`Tail` and *tail* in the module docstring."""

    async def close(self) -> None:
        """Release connections. Unsettled deliveries come back to their subscriptions."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
