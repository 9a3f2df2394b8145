"""Trace records written in the background, in batches, off the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from tidings.control.store import ControlStore, TraceRecord

__all__ = ["Recorder"]

log = logging.getLogger("tidings.control")


class Recorder:
    """Buffers :class:`TraceRecord`\\ s and writes them to the store every ``interval``
    seconds in one statement. :meth:`add` never waits and never fails: when the store is
    unreachable the buffer keeps up to ``max_buffered`` records and then drops the oldest
    (counted in :attr:`dropped`); a trace is history, not data any domain depends on. Trace
    records older than ``retention`` are pruned every few minutes.

    A process killed with SIGKILL loses what it had not written yet (at most ``interval``
    seconds of records)."""

    def __init__(
        self,
        store: ControlStore,
        *,
        interval: float = 0.5,
        max_buffered: int = 50_000,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.store = store
        self.interval = interval
        self.max_buffered = max_buffered
        self.retention = retention
        self.dropped = 0
        self._buffer: list[TraceRecord] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, record: TraceRecord) -> None:
        self._buffer.append(record)
        if len(self._buffer) > self.max_buffered:
            excess = len(self._buffer) - self.max_buffered
            del self._buffer[:excess]
            self.dropped += excess

    def start(self) -> None:
        """Write in the background until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def flush(self) -> None:
        """Write what is buffered now; on failure keep it for the next try."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            await self.store.record(batch)
        except Exception:  # noqa: BLE001 - the trace must never stop the work it records
            log.warning("could not write %d trace records; will retry", len(batch), exc_info=True)
            self._buffer[:0] = batch
            if len(self._buffer) > self.max_buffered:
                excess = len(self._buffer) - self.max_buffered
                del self._buffer[:excess]
                self.dropped += excess

    async def close(self) -> None:
        """Stop the background writer and write what is left (one try)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
            if loop.time() >= next_prune:
                next_prune = loop.time() + 300
                try:
                    await self.store.prune(self.retention)
                except Exception:  # noqa: BLE001 - pruning is housekeeping
                    log.debug("could not prune the trace", exc_info=True)
