"""Group commit: settlements of many deliveries share one transaction.

A consumer that acknowledges deliveries from many concurrent handlers would otherwise pay a
commit per message. Here each ``ack``/``retry``/``dead_letter`` joins the batch that is
forming and returns once the transaction holding it committed. A batch is written as soon as
the writer is free: while one commits, the next gathers, so batches grow with load and a lone
settlement waits for no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from functools import partial

from tidings.brokers.sqlite import queries
from tidings.brokers.sqlite.database import Database
from tidings.brokers.sqlite.queries import Settlement

__all__ = ["GroupCommit"]


class GroupCommit:
    """Batches settlements into transactions on ``db``; calls ``on_commit`` after each."""

    def __init__(self, db: Database, on_commit: Callable[[], None]) -> None:
        self._db = db
        self._on_commit = on_commit
        self._queue: list[tuple[Sequence[Settlement], asyncio.Future[None]]] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, *settlements: Settlement) -> None:
        """Return once ``settlements`` are committed (together). Raises what the transaction
        raised (:class:`~tidings.errors.BrokerUnavailable`). A no-op once closed."""
        if self._closed:
            return
        await self._enqueue(settlements)

    async def flush(self) -> None:
        """Return once everything submitted so far is committed (or failed)."""
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            await self._enqueue(())

    def _enqueue(self, settlements: Sequence[Settlement]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((settlements, future))
        self._kick.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tidings-sqlite-group-commit")
        return future

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            await asyncio.sleep(0)
            self._kick.clear()
            batch, self._queue = self._queue, []
            settlements = [s for group, _ in batch for s in group]
            try:
                if settlements:
                    await self._db.run(partial(queries.settle, settlements=settlements))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
            if settlements:
                self._on_commit()

    async def close(self) -> None:
        """Commit what is pending, then stop. Later submissions are no-ops."""
        self._closed = True
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
