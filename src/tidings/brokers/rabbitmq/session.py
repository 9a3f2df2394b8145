"""One channel's consumption of a subscription queue, and the settlement of its deliveries.

A session's deliveries can be settled only on its channel. Once the channel is gone (the
consumer closed, the connection dropped), RabbitMQ has given back what it held, and settling
those deliveries is a no-op.

Acknowledgements are gathered: those made in one turn of the event loop go out as one
``basic.ack`` with ``multiple`` set, up to the lowest delivery still unsettled, plus one
frame for each acknowledged delivery above it. A tag counts as unsettled until the frame that
settles it is queued, so a ``multiple`` acknowledgement never covers a delivery whose own
acknowledgement or rejection is still on its way (RabbitMQ closes a channel that settles a
tag twice).

Some messages are not handed out: a delayed retry that arrives before it is due is parked in
the next delay tier (see :mod:`tidings.brokers.rabbitmq.names`), and a message that comes
back after its last attempt without having been settled is dead-lettered.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp.commands import Basic

from tidings.brokers.rabbitmq import wire as amqp
from tidings.brokers.rabbitmq.copies import dead_copy, park_copy, retry_copy, unseen_copy
from tidings.brokers.rabbitmq.delivery import RabbitDelivery
from tidings.brokers.rabbitmq.hub import Hub
from tidings.brokers.rabbitmq.link import Outgoing, Wire, unless_closed
from tidings.brokers.rabbitmq.records import until_counted
from tidings.errors import BrokerError

__all__ = ["Session"]

log = logging.getLogger("tidings.brokers.rabbitmq")

_EARLY_US = 1_000
"""A delayed retry due within this many microseconds is handed out rather than parked."""
_QUIET = 0.02
"""How long to wait for deliveries RabbitMQ may still be pushing before concluding none."""
_AFTER_SETTLE = 0.1
"""...and at least this long after the last settlement, which let RabbitMQ push more."""
_RETURN_WAIT = 0.25


class Session:
    def __init__(
        self,
        hub: Hub,
        subscription: str,
        channel: AbstractChannel,
        wire: Wire,
        limit: int,
        max_attempts: Callable[[], int],
        wake: Callable[[], None],
    ) -> None:
        self.hub, self.names, self.subscription = hub, hub.names, subscription
        self.channel, self.wire, self.limit = channel, wire, limit
        self.consumer_tag = ""
        self._max_attempts, self._wake = max_attempts, wake
        self._buffer: deque[RabbitDelivery] = deque()
        self._held: set[RabbitDelivery] = set()
        self._chores: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()
        self._settled_at = 0.0
        self._unsettled: set[int] = set()
        """Tags received and not yet settled by a queued frame."""
        self._order: deque[int] = deque()
        """The same tags in the order they came; settled ones are dropped once at the front,
        or all at once when they outnumber the unsettled ones."""
        self._acks: list[int] = []
        """Tags to acknowledge in the next write."""

    @property
    def alive(self) -> bool:
        return not self.wire.is_closed

    @property
    def handed(self) -> int:
        """Deliveries handed out and not settled."""
        return len(self._held) if self.alive else 0

    @property
    def waiting(self) -> int:
        """Deliveries received from RabbitMQ and not handed out yet."""
        return len(self._buffer) if self.alive else 0

    def next(self) -> RabbitDelivery | None:
        """The next delivery to hand out, if one is here."""
        if not self._buffer or not self.alive:
            return None
        delivery = self._buffer.popleft()
        self._held.add(delivery)
        return delivery

    async def receive(self, delivered: DeliveredMessage) -> None:
        """What RabbitMQ pushed: hand it out, park it, or dead-letter it."""
        if delivered.delivery_tag is None:
            return
        self._unsettled.add(delivered.delivery_tag)
        self._order.append(delivered.delivery_tag)
        self._arrived.set()
        incoming = amqp.decode(delivered, self.names)
        delivery = RabbitDelivery(self, delivered.delivery_tag, incoming)
        if incoming.due_us is not None and incoming.due_us - amqp.now_us() > _EARLY_US:
            copy = park_copy(self.names, self.subscription, incoming, incoming.due_us)
            self._chore(self._replace(delivery, copy, "parking a delayed retry"))
        elif incoming.attempt > self._max_attempts():
            attempts = incoming.attempt - 1
            reason = (
                f"came back unsettled after its last attempt ({attempts} of max_attempts "
                f"{self._max_attempts()}): its consumer closed, lost its connection or died"
            )
            copy = dead_copy(self.names, self.subscription, incoming, reason, attempts)
            self._chore(self._replace(delivery, copy, "a dead letter"))
        else:
            self._buffer.append(delivery)
            self._wake()

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[None]) -> None:
        self._chores.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("consumer of %s: %s", self.subscription, task.exception())

    async def _replace(self, delivery: RabbitDelivery, copy: Outgoing, what: str) -> None:
        """Publish ``copy`` in place of a delivery never handed out, then ack it; give it back
        if the publish fails."""
        if not self.alive:
            return
        try:
            await self.hub.link.publish([copy], what)
        except BaseException:
            await self._settle(delivery.tag, True)
            raise
        await self._settle(delivery.tag, None)

    async def _settle(self, tag: int, requeue: bool | None) -> None:
        """Ack (``requeue`` None) or nack delivery ``tag``; a no-op once the channel is gone.
        An ack goes out with the others of this turn of the event loop, just after it."""
        if self.wire.is_closed:
            return
        self._settled_at = asyncio.get_running_loop().time()
        if requeue is None:
            self._acks.append(tag)
            if len(self._acks) == 1:
                asyncio.get_running_loop().call_soon(self._send_acks)
            return
        write = self._frames(Basic.Nack(tag, requeue=requeue))
        if not self._put(write, [tag]):
            await self._queue(write, [tag])

    def _send_acks(self) -> None:
        """Queue the gathered acks as one write: an ack with ``multiple`` set up to the lowest
        tag still unsettled, and one ack for each tag above it."""
        acks, self._acks = sorted(self._acks), []
        if not acks or self.wire.is_closed:
            return
        order, unsettled = self._order, self._unsettled
        while order and order[0] not in unsettled:
            order.popleft()
        if len(order) > 2 * len(unsettled) + 64:  # settled tags behind one held for long
            order = self._order = deque(sorted(unsettled))
        gathered = set(acks)
        lowest = next((t for t in order if t in unsettled and t not in gathered), None)
        below = len(acks) if lowest is None else bisect.bisect_left(acks, lowest)
        frames = [Basic.Ack(tag) for tag in acks[below:]]
        if below:
            frames.insert(0, Basic.Ack(acks[below - 1], multiple=below > 1))
        write = self._frames(*frames)
        if not self._put(write, acks):
            self._chore(self._queue(write, acks))

    def _frames(self, *frames: Basic.Ack | Basic.Nack) -> ChannelFrame:
        """``frames`` as one write on this channel."""
        return ChannelFrame.marshall(frames=frames, channel_number=self.wire.number)

    def _put(self, write: ChannelFrame, tags: list[int]) -> bool:
        """Queue ``write``, which settles ``tags``, if the channel's write queue has room."""
        if self.wire.write_queue.full():
            return False
        self.wire.write_queue.put_nowait(write)
        self._unsettled.difference_update(tags)
        return True

    async def _queue(self, write: ChannelFrame, tags: list[int]) -> None:
        """Queue ``write``, which settles ``tags``, once the full write queue has room."""
        with contextlib.suppress(BrokerError):
            await unless_closed(
                self.wire, asyncio.ensure_future(self.wire.write_queue.put(write)), "a settlement"
            )
            self._unsettled.difference_update(tags)

    def _release(self, delivery: RabbitDelivery) -> bool:
        """Stop holding ``delivery``; False if it was not held (given back already)."""
        if delivery not in self._held:
            return False
        self._held.discard(delivery)
        self._wake()
        return True

    async def ack(self, delivery: RabbitDelivery) -> None:
        if self._release(delivery):
            await self._settle(delivery.tag, None)

    async def retry(self, delivery: RabbitDelivery, delay: float, reason: str) -> None:
        if delivery.attempt >= self._max_attempts():
            await self.dead_letter(delivery, reason)
            return
        copy = retry_copy(self.names, self.subscription, delivery.incoming, delay)
        await self._settle_with(delivery, copy, "a retry")

    async def dead_letter(self, delivery: RabbitDelivery, reason: str) -> None:
        incoming = delivery.incoming
        copy = dead_copy(self.names, self.subscription, incoming, reason, incoming.attempt)
        await self._settle_with(delivery, copy, "a dead letter")

    async def _settle_with(self, delivery: RabbitDelivery, copy: Outgoing, what: str) -> None:
        if delivery not in self._held or not self.alive:
            return
        try:
            await self.hub.link.publish([copy], what)
        except BaseException:
            if self._release(delivery):
                await self._settle(delivery.tag, True)
            raise
        if self._release(delivery):
            await self._settle(delivery.tag, None)

    async def until_quiet(self) -> None:
        """Wait until RabbitMQ has no room left to push deliveries here, or none arrived for a
        moment (longer just after a settlement): until what it pushed has arrived, as far as
        one can tell. AMQP has no way to ask."""
        loop = asyncio.get_running_loop()
        while self.alive and self.handed + self.waiting < self.limit:
            self._arrived.clear()
            wait = max(_QUIET, self._settled_at + _AFTER_SETTLE - loop.time())
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return

    async def give_back(self) -> None:
        """Stop consuming and give back what is held: handed-out deliveries come back with
        their attempt one higher (on their last attempt they are dead-lettered instead);
        deliveries never handed out are republished with their attempt unchanged, since
        RabbitMQ would count their return as a delivery. Returns once RabbitMQ counts what
        came back as ready (or a moment passed).

        It first waits for deliveries still on their way: one that arrives after the consumer
        is cancelled is dropped, and comes back counted as an attempt."""
        self._send_acks()
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        await self.until_quiet()
        await self.wire.basic_cancel(self.consumer_tag)
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        unseen, held = list(self._buffer), list(self._held)
        self._buffer.clear()
        self._held.clear()
        names, subscription, limit = self.names, self.subscription, self._max_attempts()
        last = [d for d in held if d.attempt >= limit]
        returned = [d for d in held if d.attempt < limit]
        copies = [unseen_copy(names, subscription, d.incoming) for d in unseen]
        reason = "its consumer closed without settling it on its last attempt"
        copies += [dead_copy(names, subscription, d.incoming, reason, d.attempt) for d in last]
        try:
            await self.hub.link.publish(copies, "giving back deliveries")
        except BrokerError:
            returned += unseen + last
        else:
            for delivery in unseen + last:
                await self._settle(delivery.tag, None)
        if returned:
            queue = names.queue(subscription)
            before = (await self.wire.queue_declare(queue, passive=True)).message_count or 0
            for delivery in returned:
                await self._settle(delivery.tag, True)
            await until_counted(self.wire, queue, before + len(returned), timeout=_RETURN_WAIT)
