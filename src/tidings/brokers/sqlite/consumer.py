"""Consumers and deliveries of the sqlite broker.

A consumer leases deliveries in batches (as many as its ``prefetch`` leaves room for) and
hands them out one by one. It sleeps until its broker object commits something, the change
feed reports a commit of another process, a settlement frees room, or the next retry delay
or lease deadline of its subscription passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import deque
from functools import partial
from typing import Literal, Self

from tidings.brokers.base import ClosesOnExit, Delivery, Message
from tidings.brokers.sqlite import queries
from tidings.brokers.sqlite.hub import Hub
from tidings.brokers.sqlite.queries import Claimed, Policy, Settlement
from tidings.errors import BrokerUnavailable

__all__ = ["SqliteConsumer", "SqliteDelivery"]

_FALLBACK_WAIT = 5.0
"""Longest sleep without a wake-up; a safety net, wake-ups are expected much sooner."""


class SqliteDelivery:
    """One hand-over of a message; settle it once with :meth:`ack`, :meth:`retry` or
    :meth:`dead_letter`. Settling after the lease ran out, or after the message was handed
    out again, changes nothing."""

    __slots__ = ("_claimed", "_consumer", "_settled")

    def __init__(self, consumer: SqliteConsumer, claimed: Claimed) -> None:
        self._consumer = consumer
        self._claimed = claimed
        self._settled = False

    @property
    def message(self) -> Message:
        return self._claimed.message

    @property
    def topic(self) -> str:
        return self._claimed.topic

    @property
    def subscription(self) -> str:
        return self._consumer.subscription

    @property
    def attempt(self) -> int:
        return self._claimed.attempt

    @property
    def seq(self) -> int:
        """The message's position in publish order; its dead-letter id if it ends there."""
        return self._claimed.seq

    @property
    def lease_until(self) -> float:
        """When the lease runs out (seconds since the epoch), unless settled before."""
        return self._claimed.lease_until

    async def ack(self) -> None:
        await self._settle("ack")

    async def retry(self, delay: float, reason: str) -> None:
        await self._settle("retry", delay, reason)

    async def dead_letter(self, reason: str) -> None:
        await self._settle("dead", 0.0, reason)

    async def _settle(
        self, kind: Literal["ack", "retry", "dead"], delay: float = 0.0, reason: str = ""
    ) -> None:
        if self._settled:
            raise RuntimeError(f"delivery of message {self.message.id!r} is already settled")
        self._settled = True
        await self._consumer.settle(
            self,
            Settlement(
                kind, self.subscription, self.seq, self.attempt, self.message.key, delay, reason
            ),
        )

    def __repr__(self) -> str:
        return f"<sqlite delivery {self.message.id!r} attempt {self.attempt}>"


class SqliteConsumer(ClosesOnExit):
    """Deliveries of one subscription, at most ``prefetch`` unsettled at once (default: the
    subscription's ``in_flight``). Closing gives back at once what is unsettled: deliveries
    already handed out keep their attempt, those still buffered here do not count one."""

    def __init__(self, hub: Hub, subscription: str, prefetch: int | None) -> None:
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.subscription = subscription
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """Who holds a lease, as recorded in the database: host, process and consumer."""
        self._hub = hub
        self._prefetch = prefetch
        self._policy: Policy | None = None
        self._buffer: deque[SqliteDelivery] = deque()
        self._held: dict[int, SqliteDelivery] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._claiming: asyncio.Task[float | None] | None = None
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        async with self._lock:
            while True:
                if self._closed:
                    raise StopAsyncIteration
                delivery = await self._take_buffered()
                if delivery is not None:
                    return delivery
                policy = await self._start()
                if self._closed:
                    raise StopAsyncIteration
                self._wake.clear()
                room = (self._prefetch or policy.in_flight) - len(self._held)
                if room <= 0:
                    await self._sleep(None)
                    continue
                next_due = await self._claim(room)
                if not self._buffer:
                    await self._sleep(next_due)

    async def _start(self) -> Policy:
        """Check the subscription exists (on first use) and start receiving wake-ups."""
        if self._policy is None:
            self._policy = await self._hub.db.run(
                partial(queries.load_policy, subscription=self.subscription)
            )
            if not self._closed:
                self._hub.attach(self)
        return self._policy

    async def _take_buffered(self) -> SqliteDelivery | None:
        while self._buffer:
            delivery = self._buffer.popleft()
            if delivery.lease_until > time.time():
                return delivery
            # Its lease ran out while it waited here: give it back uncounted, do not hand
            # out what another consumer may already hold.
            self._held.pop(delivery.seq, None)
            unclaim = Settlement(
                "unclaim", self.subscription, delivery.seq, delivery.attempt, delivery.message.key
            )
            with contextlib.suppress(BrokerUnavailable):
                await self._hub.commits.submit(unclaim)
        return None

    async def _claim(self, room: int) -> float | None:
        """Lease up to ``room`` deliveries into the buffer; returns when the subscription
        next needs a look. The claim completes even if the caller is cancelled, so that
        nothing leased is lost track of; the next call then waits for that claim instead of
        starting another."""
        task = self._claiming
        if task is None or task.done():
            task = asyncio.ensure_future(self._claim_into_buffer(room))
            task.add_done_callback(_retrieve)
            self._claiming = task
        return await asyncio.shield(task)

    async def _claim_into_buffer(self, room: int) -> float | None:
        claim = await self._hub.db.run(
            partial(queries.claim, subscription=self.subscription, owner=self.owner, limit=room)
        )
        self._policy = claim.policy
        for claimed in claim.claimed:
            delivery = SqliteDelivery(self, claimed)
            self._held[claimed.seq] = delivery
            self._buffer.append(delivery)
        return claim.next_due

    async def _sleep(self, next_due: float | None) -> None:
        timeout = _FALLBACK_WAIT
        if next_due is not None:
            timeout = min(timeout, max(0.0, next_due - time.time()) + 0.001)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    def wake(self) -> None:
        self._wake.set()

    async def settle(self, delivery: SqliteDelivery, settlement: Settlement) -> None:
        """Record ``settlement`` (group-committed); frees the delivery's prefetch slot.

        A retry without delay makes the message ready before those buffered here that were
        published after it; they go back with it, so that the next claim hands it out first.
        """
        self._held.pop(delivery.seq, None)
        self._wake.set()
        returned: list[Settlement] = []
        if settlement.kind == "retry" and settlement.delay <= 0:
            returned = self._unbuffer(after=delivery.seq)
        await self._hub.commits.submit(settlement, *returned)

    def _unbuffer(self, after: int) -> list[Settlement]:
        later = [d for d in self._buffer if d.seq > after]
        if not later:
            return []
        self._buffer = deque(d for d in self._buffer if d.seq < after)
        for d in later:
            self._held.pop(d.seq, None)
        return [
            Settlement("unclaim", self.subscription, d.seq, d.attempt, d.message.key) for d in later
        ]

    async def close(self) -> None:
        """Stop, and give back every unsettled delivery. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._claiming is not None and not self._claiming.done():
            await asyncio.wait([self._claiming])
        self._hub.detach(self)
        buffered = {d.seq for d in self._buffer}
        unseen = [(d.seq, d.attempt) for d in self._buffer]
        handed = [(d.seq, d.attempt) for d in self._held.values() if d.seq not in buffered]
        self._buffer.clear()
        self._held.clear()
        if not (unseen or handed):
            return
        release = partial(
            queries.release, subscription=self.subscription, handed=handed, unseen=unseen
        )
        with contextlib.suppress(BrokerUnavailable):
            await self._hub.db.run(release)
        self._hub.notify()

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<SqliteConsumer {self.subscription!r} {self.owner}{state}>"


def _retrieve(task: asyncio.Task[float | None]) -> None:
    """Mark a claim's failure as seen when the consumer that wanted it was cancelled."""
    if not task.cancelled():
        task.exception()
