"""The consumer of the NATS broker: deliveries of one subscription from all its durable
consumers, at most ``prefetch`` handed out and unsettled at once (see
:mod:`tidings.brokers.nats.pull` for how it asks for them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Self

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from tidings.brokers.base import ClosesOnExit, Delivery
from tidings.brokers.nats import catalog, codec
from tidings.brokers.nats.api import TRANSIENT, unavailable
from tidings.brokers.nats.catalog import Policy
from tidings.brokers.nats.core import TIMEOUT, Core
from tidings.brokers.nats.delivery import NatsDelivery, Settle
from tidings.brokers.nats.giveback import confirmed, give_back, give_up, put_back
from tidings.brokers.nats.pull import PAUSE, Puller
from tidings.errors import BrokerUnavailable

__all__ = ["NatsConsumer"]

log = logging.getLogger("tidings.brokers.nats")

REFRESH = 15.0
"""How often the consumer re-reads its subscription's record (policy and topics)."""
DRAIN = 5.0
"""Longest wait on close for messages already on their way to the consumer."""


class NatsConsumer(ClosesOnExit):
    """See the module docstring and :mod:`tidings.brokers.nats`."""

    def __init__(self, core: Core, subscription: str, prefetch: int | None) -> None:
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.subscription = subscription
        self._core = core
        self._prefetch = prefetch
        self._policy: Policy | None = None
        self._policy_at = 0.0
        self._inbox = core.nc.new_inbox()
        self._puller = Puller(core.nc, self._inbox)
        self._sub: NatsSubscription | None = None
        self._buffer: deque[NatsDelivery] = deque()
        self._held: dict[NatsDelivery, None] = {}
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        async with self._lock:
            while True:
                if self._closed:
                    raise StopAsyncIteration
                self._changed.clear()
                policy = await self._start()
                if self._closed:
                    raise StopAsyncIteration
                if self._buffer and len(self._buffer) * 4 < self._limit(policy):
                    await self._puller.pull(self._room(policy), demand=False)
                delivery = self._take(policy)
                if delivery is not None:
                    return delivery  # no await between taking and returning: cancel-safe
                room = self._room(policy)
                if room > 0:
                    await self._puller.pull(room, demand=True)
                await self._sleep()

    async def _start(self) -> Policy:
        """Read the subscription's record (on first use: raises
        :class:`~tidings.errors.UnknownSubscription`) and open the inbox."""
        now = time.monotonic()
        if self._policy is None or now - self._policy_at > REFRESH:
            try:
                policy = await catalog.load(self._core.api, self._core.names, self.subscription)
            except BrokerUnavailable:
                if self._policy is None:
                    raise
                self._policy_at = now - REFRESH + PAUSE
            else:
                names, sub = self._core.names, self.subscription
                wanted: list[tuple[str, str, str | None]] = [
                    (names.topic_stream(t), sub, t) for t in policy.routes
                ]
                self._puller.use([*wanted, (names.redrive_stream, sub, None)])
                self._policy, self._policy_at = policy, now
        if self._sub is None and not self._closed:
            try:
                self._sub = await self._core.nc.subscribe(self._inbox + ".>", cb=self._on_msg)
            except TRANSIENT as exc:
                raise unavailable(exc, "subscribe") from None
            self._core.consumers.add(self)
        assert self._policy is not None
        return self._policy

    def _limit(self, policy: Policy) -> int:
        return self._prefetch or policy.in_flight

    def _room(self, policy: Policy) -> int:
        """Free prefetch slots; forgets handed-out deliveries whose lease ran out (JetStream
        has them back)."""
        now = time.monotonic()
        while self._held:
            oldest = next(iter(self._held))
            if oldest.deadline > now:
                break
            del self._held[oldest]
        return self._limit(policy) - len(self._held) - len(self._buffer)

    def _take(self, policy: Policy) -> NatsDelivery | None:
        if self._room(policy) + len(self._buffer) <= 0:
            return None
        now = time.monotonic()
        while self._buffer:
            delivery = self._buffer.popleft()
            if delivery.deadline <= now:
                continue  # its lease ran out while it waited here; JetStream has it back
            if delivery.attempt > policy.max_attempts:
                self._expire(delivery, policy)
                continue
            self._held[delivery] = None
            return delivery
        return None

    async def _sleep(self) -> None:
        now = time.monotonic()
        wake = self._puller.next_deadline(now)
        if self._held:
            wake = min(wake, next(iter(self._held)).deadline)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, wake - now) + 0.001):
                await self._changed.wait()

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            if self._puller.ended(msg.subject, msg.headers or {}):
                self._policy_at = 0.0
        elif (meta := codec.parse_ack_subject(msg.reply)) is not None:
            source = self._puller.arrived(meta.stream, meta.consumer)
            if source is not None:
                self._receive(source.topic, msg, meta)
        self._changed.set()

    def _receive(self, topic: str | None, msg: Msg, meta: codec.AckMeta) -> None:
        """Buffer a delivery, or ack it unseen when the subscription does not accept it.
        ``topic`` is None for the redrive consumer (its messages carry their topic)."""
        policy = self._policy
        assert policy is not None
        ident = (meta.stream, meta.stream_seq)
        self._core.returns.seen(self.subscription, ident)
        group = (meta.stream, meta.consumer)
        message, extra = codec.decode(
            msg.headers, msg.data, msg.subject.rpartition(".")[2], f"{meta.stream}:{ident[1]}"
        )
        prior = 0
        if topic is None:
            topic = extra.get(codec.H_TOPIC, "")
            prior = int(extra.get(codec.H_PRIOR, "0") or 0)
        elif not policy.accepts(topic, message.event_type, meta.stream_seq):
            self._core.settler.send(msg.reply, b"+ACK", group, confirm=False)
            return
        deadline = time.monotonic() + policy.lease_seconds
        self._buffer.append(
            NatsDelivery(
                self, message, topic, msg.reply, group, ident, meta.delivered, deadline, prior
            )
        )

    def reconnected(self) -> None:
        """Replace every open request (a restarted server lost them). If the server kept
        them, each may still bring messages; those wait here until there is room."""
        self._puller.reset()
        self._changed.set()

    async def settle(
        self, delivery: NatsDelivery, kind: Settle, delay: float = 0.0, reason: str = ""
    ) -> None:
        """Settle ``delivery`` once; a no-op after its lease ran out or after close."""
        if delivery.settled:
            raise RuntimeError(f"delivery of message {delivery.message.id!r} is already settled")
        delivery.settled = True
        self._held.pop(delivery, None)
        self._changed.set()
        policy = self._policy
        if policy is None or delivery.given_back or time.monotonic() >= delivery.deadline:
            return
        core, sub = self._core, self.subscription
        if kind == "retry" and delivery.attempt >= policy.max_attempts:
            kind = "dead"
        if kind == "retry":
            core.failures.note(sub, delivery.ident)
            core.returns.add(sub, delivery.ident, delay, keep=policy.lease_seconds)
            payload = b"-NAK" if delay <= 0 else b'-NAK {"delay": %d}' % int(delay * 1e9)
            await confirmed(core.settler.send(delivery.ack_subject, payload, delivery.group))
            return
        if kind == "dead":
            await core.dead_letter(
                sub,
                delivery.topic,
                delivery.message,
                delivery.ident,
                delivery.delivered,
                delivery.attempt,
                reason,
            )
        else:
            core.failures.pop(sub, delivery.ident)
        await confirmed(core.settler.send(delivery.ack_subject, b"+ACK", delivery.group))

    def _expire(self, delivery: NatsDelivery, policy: Policy) -> None:
        """Dead-letter a delivery that came back after its last attempt went unsettled."""
        reason = (
            f"not settled on its last attempt ({policy.max_attempts}): its lease ran out "
            "or its consumer went away"
        )
        task = asyncio.create_task(
            give_up(self._core, self.subscription, delivery, policy.max_attempts, reason)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop, and give back every unsettled delivery at once: handed-out ones on their
        last attempt go to the dead letters, the other handed-out ones are redelivered with
        their attempt counted, and those fetched but never handed out come back uncounted
        (see :func:`~tidings.brokers.nats.giveback.put_back`). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        self._core.consumers.discard(self)
        if self._sub is not None:
            try:
                async with asyncio.timeout(DRAIN):
                    await self._sub.drain()  # type: ignore[no-untyped-call]
            except Exception:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
        policy, sub, now = self._policy, self.subscription, time.monotonic()
        unseen = [d for d in self._buffer if d.deadline > now]
        handed = [d for d in self._held if d.deadline > now]
        self._buffer.clear()
        self._held.clear()
        if policy is None:
            return
        waits = [put_back(self._core, sub, unseen, policy)] if unseen else []
        for delivery in handed:
            delivery.given_back = True
            if delivery.attempt >= policy.max_attempts:
                reason = (
                    "its consumer closed without settling it on its last attempt "
                    f"({delivery.attempt})"
                )
                waits.append(give_up(self._core, sub, delivery, delivery.attempt, reason))
            else:
                waits.append(give_back(self._core, sub, delivery, policy))
        for result in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("could not give back a delivery of %s: %s", sub, result)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=TIMEOUT)

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<NatsConsumer {self.subscription!r}{state}>"
