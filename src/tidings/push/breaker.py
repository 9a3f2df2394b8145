"""A circuit breaker per endpoint: stop sending to an endpoint that keeps failing, and
probe it now and then until it answers again.

*Closed*: every request goes. After ``threshold`` failures in a row it *opens*: no request
goes for ``cool_down`` seconds. Then it is *half open*: one request (the probe) goes;
success closes it, failure opens it again for twice as long (up to ``max_cool_down``).
An endpoint that asks for time (``Retry-After`` on a 429 or 503) opens it for that long.

The dispatcher takes no delivery of the subscription while the breaker is open, and one at
a time while it is half open, so that an endpoint that is down costs one attempt per probe,
not one per event.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

from tidings.listener.outcomes import Retry

__all__ = ["Breaker", "State"]

log = logging.getLogger("tidings.push")


class State(enum.Enum):
    CLOSED = "closed"
    """Requests go."""
    OPEN = "open"
    """No request goes until the cool-down ends."""
    HALF_OPEN = "half_open"
    """One request goes, to learn whether the endpoint is back."""


class Breaker:
    """The breaker of one endpoint. ``on_change`` is called (without arguments) after every
    change of :attr:`state`. Use from one event loop."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        cool_down: float = 1.0,
        max_cool_down: float = 30.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cool_down = cool_down
        self.max_cool_down = max_cool_down
        self.on_change = on_change
        self.state = State.CLOSED
        self._failures = 0
        self._probing = False
        self._wait = cool_down
        self._until = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def admit(self) -> None:
        """Return when a request may go now; raise :class:`Retry` (after the rest of the
        cool-down) when it may not."""
        if self.state is State.CLOSED:
            return
        if self.state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return
        after = max(self._until - time.monotonic(), 0.0) or self._wait
        raise Retry(f"circuit open: {self.name} is failing", after=after)

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False
        self._wait = self.cool_down
        if self.state is not State.CLOSED:
            log.info("circuit closed: %s answers again", self.name)
            self._set(State.CLOSED)

    def failed(self, hold: float | None = None) -> None:
        """Count one failure; ``hold`` (the endpoint's ``Retry-After``) opens the breaker
        for that long whatever the count."""
        self._failures += 1
        probe_failed = self.state is State.HALF_OPEN and self._probing
        self._probing = False
        if hold is not None and hold > 0:
            self._open(hold)
        elif probe_failed:
            self._wait = min(self._wait * 2, self.max_cool_down)
            self._open(self._wait)
        elif self.state is State.CLOSED and self._failures >= self.threshold:
            self._open(self._wait)

    def close(self) -> None:
        """Cancel the pending probe timer (when the dispatcher stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _open(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._until = time.monotonic() + seconds
        self._timer = asyncio.get_running_loop().call_later(seconds, self._half_open)
        if self.state is not State.OPEN:
            log.warning("circuit open for %.1fs: %s is failing", seconds, self.name)
            self._set(State.OPEN)

    def _half_open(self) -> None:
        self._timer = None
        self._set(State.HALF_OPEN)

    def _set(self, state: State) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change()
