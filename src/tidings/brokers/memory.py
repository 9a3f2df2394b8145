"""The in-process broker: pure asyncio, for unit tests of code that uses a :class:`Broker`.

``memory://`` opens a fresh broker; ``memory://name`` opens the one broker of that name in
this process, until it is closed. It keeps every promise of :mod:`tidings.brokers.base` that
needs neither a disk nor a second process: fan-out, filters, competing consumers, prefetch,
retry with delay, per-key order, leases and dead letters. Nothing survives :meth:`close`.

Leases are deadlines, as the ``leases`` flag promises: a delivery left unsettled for the
subscription's ``lease_seconds`` comes back (attempt one higher) even while its consumer is
open, and settling it afterwards is a no-op. Nothing extends a lease, so ``lease_seconds``
must exceed the longest handler. A closed consumer's unsettled deliveries come back at once.

``Depth.ready`` counts every message that is neither in flight nor delayed, including those
waiting behind an earlier message of the same key.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar, Self

from tidings.brokers.base import (
    Capabilities,
    ClosesOnExit,
    Consumer,
    DeadLetter,
    Delivery,
    Depth,
    Message,
    Tail,
)
from tidings.brokers.tails import QueueTail
from tidings.errors import BrokerUnavailable, UnknownSubscription, UnknownTopic
from tidings.topology import Subscription, Topology

__all__ = ["MemoryBroker"]

CAPABILITIES = Capabilities(per_key_order=True, leases=True, durable=False, multi_process=False)


def _now() -> datetime:
    return datetime.now(UTC)


class _Entry:
    """One message in one subscription, from publish until it is acked or dead-lettered."""

    __slots__ = ("attempt", "first_failed_at", "holder", "message", "seq", "timer", "topic")

    def __init__(self, seq: int, topic: str, message: Message) -> None:
        self.seq = seq
        self.topic = topic
        self.message = message
        self.attempt = 0
        self.holder: _Delivery | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.first_failed_at: datetime | None = None

    def __lt__(self, other: _Entry) -> bool:
        return self.seq < other.seq


class _Queue:
    """The state of one subscription.

    ``ready`` is a heap in publish order. A keyed message joins ``ready`` only when it heads
    its key's ``line``, and leaves the line when it is acked or dead-lettered, which lets the
    next one in: per-key order without scanning.
    """

    def __init__(self, policy: Subscription) -> None:
        self.policy = policy
        self.ready: list[_Entry] = []
        self.lines: dict[str, deque[_Entry]] = {}
        self.delayed: set[_Entry] = set()
        self.live = 0
        self.in_flight = 0
        self.dead: dict[str, DeadLetter] = {}
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._dead_ids = itertools.count(1)

    def add(self, entry: _Entry) -> None:
        self.live += 1
        key = entry.message.key
        if key:
            line = self.lines.get(key)
            if line is not None:
                line.append(entry)
                return
            self.lines[key] = deque((entry,))
        self.make_ready(entry)

    def make_ready(self, entry: _Entry) -> None:
        heapq.heappush(self.ready, entry)
        self.wake()

    def wake(self) -> None:
        """Wake one waiting consumer, if any."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take(self) -> _Entry | None:
        return heapq.heappop(self.ready) if self.ready else None

    def finish(self, entry: _Entry) -> None:
        self.live -= 1
        key = entry.message.key
        if not key:
            return
        line = self.lines[key]
        line.popleft()
        if line:
            self.make_ready(line[0])
        else:
            del self.lines[key]

    def bury(self, entry: _Entry, reason: str) -> None:
        now = _now()
        self.finish(entry)
        dead_id = str(next(self._dead_ids))
        self.dead[dead_id] = DeadLetter(
            id=dead_id,
            subscription=self.policy.name,
            topic=entry.topic,
            message=entry.message,
            reason=reason,
            attempts=entry.attempt,
            first_failed_at=entry.first_failed_at or now,
            last_failed_at=now,
        )

    def postpone(self, entry: _Entry, delay: float, reason: str) -> None:
        if entry.attempt >= self.policy.max_attempts:
            self.bury(entry, reason)
            return
        entry.first_failed_at = entry.first_failed_at or _now()
        self.delayed.add(entry)
        entry.timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._due, entry)

    def _due(self, entry: _Entry) -> None:
        entry.timer = None
        self.delayed.discard(entry)
        self.make_ready(entry)

    def come_back(self, entry: _Entry, why: str) -> None:
        """An unsettled delivery returns: deliver it again, or give up after the last attempt."""
        if entry.attempt >= self.policy.max_attempts:
            self.bury(entry, f"no settlement after {entry.attempt} attempts ({why})")
            return
        entry.first_failed_at = entry.first_failed_at or _now()
        self.make_ready(entry)

    def depth(self) -> Depth:
        delayed = len(self.delayed)
        return Depth(
            ready=self.live - self.in_flight - delayed,
            in_flight=self.in_flight,
            delayed=delayed,
            dead=len(self.dead),
        )

    def stop_timers(self) -> None:
        for entry in self.delayed:
            if entry.timer is not None:
                entry.timer.cancel()
        self.delayed.clear()


class _Delivery:
    """One hand-over. It holds its message while ``entry.holder is self``."""

    def __init__(self, consumer: _Consumer, queue: _Queue, entry: _Entry) -> None:
        self._consumer = consumer
        self._queue = queue
        self._entry = entry
        self._settled = False
        self.message = entry.message
        self.topic = entry.topic
        self.subscription = queue.policy.name
        self.attempt = entry.attempt
        self.lease: asyncio.TimerHandle | None = None

    async def ack(self) -> None:
        if self._settle():
            self._queue.finish(self._entry)

    async def retry(self, delay: float, reason: str) -> None:
        if self._settle():
            self._queue.postpone(self._entry, delay, reason)

    async def dead_letter(self, reason: str) -> None:
        if self._settle():
            self._queue.bury(self._entry, reason)

    def _settle(self) -> bool:
        """Mark settled; True when this delivery still held its message (else a no-op)."""
        if self._settled:
            raise RuntimeError(f"delivery of message {self.message.id!r} is already settled")
        self._settled = True
        return self._release()

    def _release(self) -> bool:
        if self._entry.holder is not self:
            return False
        self._entry.holder = None
        if self.lease is not None:
            self.lease.cancel()
        self._queue.in_flight -= 1
        self._consumer.forget(self)
        return True

    def give_back(self, why: str) -> None:
        if self._release():
            self._queue.come_back(self._entry, why)

    def expire(self) -> None:
        self.give_back(f"lease of {self._queue.policy.lease_seconds:g}s expired")

    def __repr__(self) -> str:
        return f"<memory delivery {self.message.id!r} attempt {self.attempt}>"


class _Consumer(ClosesOnExit):
    """Takes from one subscription; at most ``prefetch`` unsettled deliveries at once."""

    def __init__(self, broker: MemoryBroker, subscription: str, prefetch: int | None) -> None:
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._broker = broker
        self._subscription = subscription
        self._prefetch = prefetch
        self._queue: _Queue | None = None
        self._held: set[_Delivery] = set()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def _resolve(self) -> _Queue:
        if self._queue is None:
            self._queue = self._broker._queue(self._subscription)
            self._broker._consumers.add(self)
        return self._queue

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        await asyncio.sleep(0)  # a hand-over is never synchronous: other tasks get a turn
        while not self._closed:
            queue = self._resolve()
            limit = self._prefetch or queue.policy.in_flight
            if len(self._held) >= limit:
                await self._wait(None)
                continue
            entry = queue.take()
            if entry is None:
                await self._wait(queue)
                continue
            entry.attempt += 1
            delivery = _Delivery(self, queue, entry)
            entry.holder = delivery
            queue.in_flight += 1
            self._held.add(delivery)
            loop = asyncio.get_running_loop()
            delivery.lease = loop.call_later(queue.policy.lease_seconds, delivery.expire)
            return delivery
        raise StopAsyncIteration

    async def _wait(self, queue: _Queue | None) -> None:
        """Sleep until poked: by the queue when a message is ready, or by a released slot."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        if queue is not None:
            queue.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if queue is not None and waiter.done() and not waiter.cancelled():
                queue.wake()  # pass on the wake-up this task can no longer use
            raise
        finally:
            self._waiter = None

    def _poke(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def forget(self, delivery: _Delivery) -> None:
        self._held.discard(delivery)
        self._poke()

    def shut(self) -> None:
        self._closed = True
        for delivery in list(self._held):
            delivery.give_back("consumer closed")
        self._poke()

    async def close(self) -> None:
        self.shut()

    async def __aenter__(self) -> Self:
        self._resolve()
        return self


class MemoryBroker(ClosesOnExit):
    """A :class:`~tidings.brokers.base.Broker` held in this process's memory."""

    _named: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self) -> None:
        self._name = ""
        self._queues: dict[str, _Queue] = {}
        self._routes: dict[str, list[_Queue]] = {}
        self._consumers: weakref.WeakSet[_Consumer] = weakref.WeakSet()
        self._tails: dict[str, set[_MemoryTail]] = {}
        self._seq = itertools.count()
        self._closed = False

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The broker called ``name`` in this process (created on first use); a fresh one
        for an empty name. Closing a named broker forgets it."""
        if not name:
            return cls()
        broker = cls._named.get(name)
        if broker is None:
            broker = cls._named[name] = cls()
            broker._name = name
        return broker

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("memory broker is closed")

    def _queue(self, subscription: str) -> _Queue:
        self._check_open()
        queue = self._queues.get(subscription)
        if queue is None:
            raise UnknownSubscription(subscription)
        return queue

    async def declare(self, topology: Topology) -> None:
        self._check_open()
        for topic in topology.topics:
            self._routes.setdefault(topic.name, [])
        for policy in topology.subscriptions:
            queue = self._queues.get(policy.name)
            if queue is None:
                self._queues[policy.name] = _Queue(policy)
            else:
                queue.policy = policy
        for name, routes in self._routes.items():
            routes[:] = [q for q in self._queues.values() if name in q.policy.topics]

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        self._check_open()
        routes = self._routes.get(topic)
        if routes is None:
            raise UnknownTopic(topic)
        tails = self._tails.get(topic, ())
        for sent in messages:
            message = _copy(sent)
            for queue in routes:
                if queue.policy.accepts(topic, message.event_type):
                    queue.add(_Entry(next(self._seq), topic, message))
            for tail in tails:
                tail.put(message)

    async def deliver(self, subscription: str, messages: Sequence[Message], *, topic: str) -> int:
        queue = self._queue(subscription)
        chosen = [m for m in messages if queue.policy.accepts(topic, m.event_type)]
        for sent in chosen:
            queue.add(_Entry(next(self._seq), topic, _copy(sent)))
        return len(chosen)

    def tail(self, topic: str) -> Tail:
        return _MemoryTail(self, topic)

    def consume(self, subscription: str, *, prefetch: int | None = None) -> Consumer:
        return _Consumer(self, subscription, prefetch)

    async def depth(self, subscription: str) -> Depth:
        return self._queue(subscription).depth()

    async def dead_letters(self, subscription: str, *, limit: int = 100) -> list[DeadLetter]:
        return list(itertools.islice(self._queue(subscription).dead.values(), limit))

    async def redrive(self, subscription: str, ids: Sequence[str] | None = None) -> int:
        queue = self._queue(subscription)
        wanted = None if ids is None else set(ids)
        chosen = [i for i in queue.dead if wanted is None or i in wanted]
        for dead_id in chosen:
            dead = queue.dead.pop(dead_id)
            queue.add(_Entry(next(self._seq), dead.topic, dead.message))
        return len(chosen)

    async def purge(self, subscription: str) -> int:
        queue = self._queue(subscription)
        count = len(queue.dead)
        queue.dead.clear()
        return count

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._name and self._named.get(self._name) is self:
            del self._named[self._name]
        for consumer in list(self._consumers):
            consumer.shut()
        for tails in list(self._tails.values()):
            for tail in list(tails):
                await tail.close()
        for queue in self._queues.values():
            queue.stop_timers()

    def __repr__(self) -> str:
        return f"<MemoryBroker {self._name or hex(id(self))}{' closed' if self._closed else ''}>"


def _copy(sent: Message) -> Message:
    """A private copy, as a real broker would hold: later changes by the caller must not
    reach consumers."""
    return Message(
        id=sent.id,
        event_type=sent.event_type,
        key=sent.key,
        body=bytes(sent.body),
        headers=dict(sent.headers),
    )


class _MemoryTail(QueueTail):
    """Receives each message as :meth:`MemoryBroker.publish` takes it."""

    def __init__(self, broker: MemoryBroker, topic: str) -> None:
        super().__init__(topic)
        self._broker = broker

    async def _open(self) -> None:
        broker = self._broker
        broker._check_open()
        if self.topic not in broker._routes:
            raise UnknownTopic(self.topic)
        broker._tails.setdefault(self.topic, set()).add(self)

    async def _shut(self) -> None:
        tails = self._broker._tails.get(self.topic)
        if tails is not None:
            tails.discard(self)
            if not tails:
                del self._broker._tails[self.topic]
