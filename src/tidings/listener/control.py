"""What ties one listener runtime to the control store and the trace: it reads the
operator's controls, reports heartbeats, and turns each settle into a trace record.

The store steers a listener and never stops it: a call that fails or takes longer than
:data:`CONTROL_TIMEOUT` leaves what was read last in force, with a warning at most once a
minute, and a line when the store answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from tidings.brokers.base import Delivery
from tidings.control import Controls, ControlStore, ListenerBeat, Recorder, TraceRecord
from tidings.control import process_name as _process_name
from tidings.events import Event
from tidings.listener.outcomes import Outcome
from tidings.listener.stale import StaleNote

__all__ = ["CONTROL_TIMEOUT", "RATE_WINDOW", "ControlLink", "Status", "raise_if_cancelled"]

log = logging.getLogger("tidings.listener")

_T = TypeVar("_T")

CONTROL_TIMEOUT = 5.0
"""Longest wait for one read or heartbeat of the control store."""

STORE_WARNING_INTERVAL = 60.0
"""Seconds between two warnings that the control store cannot be used."""

RATE_WINDOW = 10.0
"""Seconds over which a heartbeat's events per second are measured."""


@dataclass(frozen=True, slots=True)
class Status:
    """What a runtime reports in a heartbeat."""

    in_flight: int
    settled: int
    paused: bool


class ControlLink:
    """The control store and trace recorder of one subscription's runtime in this process
    (either may be None: then that part does nothing)."""

    def __init__(
        self,
        subscription: str,
        *,
        store: ControlStore | None,
        recorder: Recorder | None,
        interval: float,
    ) -> None:
        self.subscription = subscription
        self.store = store
        self.recorder = recorder
        self.interval = interval
        self.process = _process_name()
        self._down = False
        self._warned_at: float | None = None

    async def controls(self) -> Controls | None:
        """The controls set on the subscription; None without a store or when it cannot be
        read."""
        if self.store is None:
            return None
        return await self._call("read the controls", self.store.controls(self.subscription))

    async def follow(self, status: Callable[[], Status], apply: Callable[[Controls], None]) -> None:
        """Every ``interval`` seconds, until cancelled: report a heartbeat made from
        ``status()`` and ``apply`` the controls read."""
        if self.store is None:
            return
        samples: deque[tuple[float, int]] = deque()
        while True:
            now, current = time.monotonic(), status()
            samples.append((now, current.settled))
            while now - samples[0][0] > RATE_WINDOW:
                samples.popleft()
            since, settled = samples[0]
            beat = ListenerBeat(
                subscription=self.subscription,
                process=self.process,
                in_flight=current.in_flight,
                settled=current.settled,
                per_second=(current.settled - settled) / (now - since) if now > since else 0.0,
                paused=current.paused,
                seen_at=datetime.now(UTC),
            )
            await self._call("report", self.store.beat(beat))
            raise_if_cancelled()
            await asyncio.sleep(self.interval)
            controls = await self.controls()
            raise_if_cancelled()
            if controls is not None:
                apply(controls)

    async def gone(self) -> None:
        """Tell the store this process no longer listens."""
        if self.store is not None:
            await self._call("report the stop", self.store.gone(self.subscription, self.process))

    def settled(
        self,
        delivery: Delivery,
        event: Event | None,
        outcome: Outcome,
        reason: str,
        note: StaleNote | None,
    ) -> None:
        """Trace one settle. An applied event whose every guarded field was stale is
        ``stale``; the stale fields are the detail of an applied event."""
        if self.recorder is None:
            return
        name, detail = outcome.value, reason or None
        if outcome is Outcome.APPLIED and note is not None and note.stale:
            detail = ", ".join(sorted(note.stale))
            if note.changed_nothing:
                name = "stale"
        message = delivery.message
        self.recorder.add(
            TraceRecord(
                correlation_id=(
                    event.correlation_id if event else message.headers.get("correlation-id", "")
                ),
                event_id=str(event.id) if event else message.id,
                event_type=event.event_type if event else message.event_type,
                entity_id=event.entity_id if event else message.key,
                outcome=name,
                process=self.process,
                at=datetime.now(UTC),
                topic=delivery.topic,
                subscription=self.subscription,
                attempt=delivery.attempt,
                detail=detail,
            )
        )

    async def _call(self, doing: str, call: Awaitable[_T]) -> _T | None:
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                result = await call
        except Exception as exc:  # noqa: BLE001 - the store steers the listener, never stops it
            now = time.monotonic()
            if self._warned_at is None or now - self._warned_at >= STORE_WARNING_INTERVAL:
                self._warned_at = now
                log.warning(
                    "cannot %s on the control store (%s); keeping the last controls",
                    doing,
                    str(exc) or type(exc).__name__,
                    extra={"subscription": self.subscription},
                )
            self._down = True
            return None
        if self._down:
            self._down = False
            log.info("control store reachable again", extra={"subscription": self.subscription})
        return result


def raise_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to cancel. A client call may
    swallow the cancellation (finish, or raise an error of its own): a loop that goes on
    after one must not outlive the runtime that cancelled it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
