"""Publishing with JetStream acknowledgements, and settling deliveries with confirmations.

Both send many messages before waiting for any answer: a batch of publishes costs one round
trip, not one per message, and so does a burst of acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tidings.brokers.nats.api import TRANSIENT, ApiError, unavailable
from tidings.brokers.nats.codec import Encoded
from tidings.errors import BrokerUnavailable

__all__ = ["NoStream", "Replies", "Settler", "publish"]


class NoStream(Exception):
    """No stream captures the subject (the server answered "no responders")."""


class Replies:
    """Futures for replies to messages sent with a subject from :meth:`expect`, all on one
    wildcard inbox subscription."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._count = 0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    def expect(self) -> tuple[str, asyncio.Future[Msg]]:
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return self._prefix + token, future

    def forget(self, subject: str) -> None:
        future = self._waiting.pop(subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.cancel()

    def abandon(self) -> None:
        """Give up on every reply awaited (the connection dropped: they may never come)."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def close(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


async def publish(
    nc: Client,
    replies: Replies,
    messages: Sequence[tuple[str, Encoded]],
    timeout: float,
    expected_last_subject_seq: int | None = None,
) -> list[dict[str, Any]]:
    """Publish every ``(subject, message)`` and return their PubAcks once all arrived.
    Raises :class:`NoStream` when a subject has no stream, :class:`ApiError` when JetStream
    refuses one, and :class:`BrokerUnavailable` when the answers do not come within
    ``timeout`` (any subset may have been stored)."""
    pending: list[tuple[str, asyncio.Future[Msg]]] = []
    try:
        for subject, encoded in messages:
            headers = encoded.headers
            if expected_last_subject_seq is not None:
                headers = {
                    **headers,
                    "Nats-Expected-Last-Subject-Sequence": str(expected_last_subject_seq),
                }
            reply, future = replies.expect()
            pending.append((reply, future))
            await nc.publish(subject, encoded.body, reply=reply, headers=headers)
        futures = [future for _, future in pending]
        if futures:
            _, late = await asyncio.wait(futures, timeout=timeout)
            if late:
                raise BrokerUnavailable(
                    f"NATS: {len(late)} of {len(futures)} publishes unacknowledged "
                    f"after {timeout:g}s"
                )
    except TRANSIENT as exc:
        raise unavailable(exc, "publish") from None
    finally:
        for reply, future in pending:
            if not future.done():
                replies.forget(reply)
    acks: list[dict[str, Any]] = []
    for (subject, _), (_, future) in zip(messages, pending, strict=True):
        if future.cancelled():
            raise BrokerUnavailable("NATS: the connection dropped before every PubAck arrived")
        msg = future.result()
        if msg.headers and msg.headers.get("Status") == "503":
            raise NoStream(subject)
        answer = json.loads(msg.data)
        if "error" in answer:
            raise ApiError(f"publish to {subject}", answer["error"])
        acks.append(answer)
    return acks


class Settler:
    """Sends acks and naks in the order they are asked for and confirms them in groups.

    JetStream answers an ack that carries a reply subject once it has applied it, and it
    applies the acks of one consumer in order: so only the last ack of each consumer in a
    burst needs a reply, and its answer confirms the whole burst. While one burst waits for
    its answers the next one forms, so bursts grow with load.

    A burst is written once the event loop has turned :attr:`QUIET` times in a row without
    bringing another settlement (or :attr:`BURST` are queued, or :attr:`SPAN` seconds went
    by while they kept coming). nats-py writes in one go only what is published within one
    loop turn, and a caller that settles deliveries one at a time as it handles them
    settles a few turns apart: gathering across turns lets such a stream share one socket
    write and one confirmation among many acks, where it would otherwise cost a write, a
    reply and a task each. A lone settlement waits a few idle turns, microseconds.
    """

    QUIET = 4
    """Loop turns without a new settlement that end a burst."""
    BURST = 256
    """Settlements that are written at once, without waiting for more."""
    SPAN = 0.005
    """Seconds a burst may keep growing while settlements keep coming."""

    def __init__(self, nc: Client, replies: Replies, timeout: float) -> None:
        self._nc = nc
        self._replies = replies
        self._timeout = timeout
        self._queue: list[tuple[str, bytes, tuple[str, str], asyncio.Future[None] | None]] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._confirming: set[asyncio.Task[None]] = set()
        self._closing = False

    def send(
        self, subject: str, payload: bytes, group: tuple[str, str], *, confirm: bool = True
    ) -> asyncio.Future[None] | None:
        """Queue ``payload`` for the ack subject ``subject`` of consumer ``group``. Returns a
        future that completes once JetStream applied it (None when ``confirm`` is false)."""
        future = asyncio.get_running_loop().create_future() if confirm else None
        self._queue.append((subject, payload, group, future))
        self._kick.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="tidings-nats-settler")
        return future

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            await self._gather()
            self._kick.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._write(batch)
            if self._closing and not self._queue:
                return

    async def _gather(self) -> None:
        """Let the loop turn while settlements keep coming (see the class docstring)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.SPAN
        seen, quiet = len(self._queue), 0
        while quiet < self.QUIET and seen < self.BURST and not self._closing:
            await asyncio.sleep(0)
            if len(self._queue) == seen:
                quiet += 1
            elif loop.time() >= until:
                return
            else:
                seen, quiet = len(self._queue), 0

    async def _write(
        self, batch: list[tuple[str, bytes, tuple[str, str], asyncio.Future[None] | None]]
    ) -> None:
        """Publish ``batch`` (nats-py writes it in one go at its next turn); confirm it in a
        task of its own, so that the next burst forms meanwhile."""
        last = {group: i for i, (_, _, group, _) in enumerate(batch)}
        confirms: dict[tuple[str, str], tuple[str, asyncio.Future[Msg]]] = {}
        try:
            for i, (subject, payload, group, _) in enumerate(batch):
                if last[group] == i:
                    confirms[group] = reply, _ = self._replies.expect()
                    await self._nc.publish(subject, payload, reply=reply)
                else:
                    await self._nc.publish(subject, payload)
        except Exception as exc:  # every waiter hears of it, and the settler goes on
            error = unavailable(exc, "settle") if isinstance(exc, TRANSIENT) else exc
            for reply, _ in confirms.values():
                self._replies.forget(reply)
            for *_, future in batch:
                if future is not None and not future.done():
                    future.set_exception(error)
            return
        task = asyncio.create_task(self._confirm(batch, confirms))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(
        self,
        batch: list[tuple[str, bytes, tuple[str, str], asyncio.Future[None] | None]],
        confirms: dict[tuple[str, str], tuple[str, asyncio.Future[Msg]]],
    ) -> None:
        answers = [answer for _, answer in confirms.values()]
        if answers:
            await asyncio.wait(answers, timeout=self._timeout)
        for reply, answer in confirms.values():
            if not answer.done():
                self._replies.forget(reply)
        for _, _, group, future in batch:
            if future is None or future.done():
                continue
            if confirms[group][1].done() and not confirms[group][1].cancelled():
                future.set_result(None)
            else:
                future.set_exception(
                    BrokerUnavailable(f"NATS: acks unconfirmed after {self._timeout:g}s")
                )

    async def close(self) -> None:
        """Write what is queued at once, wait for what is in flight to be confirmed (up to
        the timeout), then stop."""
        self._closing = True
        self._kick.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=self._timeout)
        if self._confirming:
            await asyncio.wait(list(self._confirming), timeout=self._timeout)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
