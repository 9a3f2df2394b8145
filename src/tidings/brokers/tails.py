"""What the backends' tails share: a :class:`~tidings.brokers.base.Tail` fed by the backend
(a callback, a reading task) through an in-process queue."""

from __future__ import annotations

import asyncio
from typing import Self

from tidings.brokers.base import ClosesOnExit, Message

__all__ = ["QueueTail"]


class _End:
    """Put last: iteration stops here."""


_END = _End()


class QueueTail(ClosesOnExit):
    """A tail whose backend hands messages to :meth:`put` once :meth:`_open` ran. The first
    ``async with`` or ``__anext__`` opens it; :meth:`close` stops the iteration at once
    (what was received and not yet taken is dropped) and runs :meth:`_shut`.

    The queue is unbounded: a tail never pushes back on publishers, so one that is not read
    holds what arrives in memory until closed."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._queue: asyncio.Queue[Message | BaseException | _End] = asyncio.Queue()
        self._opening: asyncio.Task[None] | None = None
        self._closed = False

    async def _open(self) -> None:
        """Start receiving: from now on every message published to the topic reaches
        :meth:`put`. Raises :class:`~tidings.errors.UnknownTopic`."""
        raise NotImplementedError

    async def _shut(self) -> None:
        """Stop receiving and remove what :meth:`_open` made."""
        raise NotImplementedError

    def put(self, message: Message) -> None:
        if not self._closed:
            self._queue.put_nowait(message)

    def fail(self, exc: BaseException) -> None:
        """End the iteration with ``exc`` after what was received before it."""
        if not self._closed:
            self._queue.put_nowait(exc)

    async def _start(self) -> None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        await self._start()
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(_END)
            raise item
        return item

    async def close(self) -> None:
        """Stop, and remove what the tail made on the broker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)
        opening = self._opening
        if opening is None:
            return
        try:
            await opening
        except Exception:
            return  # it never opened: nothing to remove
        await self._shut()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.topic!r}{state}>"
