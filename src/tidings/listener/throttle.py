"""Pace controls for a listener: a rate limit, an in-flight limit and a pause gate."""

from __future__ import annotations

import asyncio

__all__ = ["Gate", "RateLimiter", "Slots"]


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst``
    (a token bucket). ``rate=None`` never waits. The rate may change while in use."""

    def __init__(self, rate: float | None, *, burst: float | None = None) -> None:
        self._lock = asyncio.Lock()
        self._tokens = 0.0
        self._updated: float | None = None
        self.burst = burst
        self.rate = rate

    @property
    def rate(self) -> float | None:
        return self._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError("rate must be positive or None")
        self._rate = value
        self._capacity = max(1.0, self.burst if self.burst is not None else (value or 1.0) / 10)
        self._tokens = min(self._tokens, self._capacity)

    async def acquire(self) -> None:
        if self._rate is None:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            while True:
                rate = self._rate
                if rate is None:
                    return
                now = loop.time()
                if self._updated is None:
                    self._updated, self._tokens = now, self._capacity
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / rate)


class Gate:
    """Open or closed; :meth:`wait` returns at once while open and blocks while closed."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    async def wait(self) -> None:
        await self._open.wait()


class Slots:
    """A count of what is held against a limit that may change while in use: :meth:`wait`
    returns once fewer than :attr:`limit` are held. Lowering the limit below what is held
    takes nothing back; it only stops new takes until enough are released."""

    def __init__(self, limit: int) -> None:
        self.held = 0
        self._room = asyncio.Event()
        self.limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        if value < 1:
            raise ValueError("limit must be at least 1")
        self._limit = value
        self._update()

    @property
    def full(self) -> bool:
        return self.held >= self._limit

    def take(self) -> None:
        self.held += 1
        if self.held >= self._limit:
            self._room.clear()

    def release(self) -> None:
        self.held -= 1
        if self.held < self._limit:
            self._room.set()

    async def wait(self) -> None:
        await self._room.wait()

    def _update(self) -> None:
        if self.held < self._limit:
            self._room.set()
        else:
            self._room.clear()
