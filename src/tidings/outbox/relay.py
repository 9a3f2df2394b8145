"""The relay: moves committed outbox rows to their topics, at least once, in order per entity.

Rows are *claimed* before they are published (a short lease written on the row), so that
several relays on one outbox publish each row once in the common case. A row is eligible
while it is unpublished and unclaimed (or its claim ran out), and no earlier unpublished row
of the same entity is claimed by another relay: per-entity order holds across relays. Rows
are found by ``published_at IS NULL``, never by a high-water mark, so a row whose transaction
committed after a later row's is still published.

The claim is a short transaction of its own and the lease outlives it: no transaction stays
open while the broker is called (which may take as long as the broker's backoff), and a
relay that dies mid-publish leaves its rows to the others once the lease runs out. On SQLite
claims take turns on the write lock; on PostgreSQL they run side by side and skip the rows
another relay is claiming (``FOR UPDATE SKIP LOCKED``, see :func:`tidings.outbox.postgres.
claim`). Leases compare timestamps of the relays' clocks, so relays on several machines need
clocks in step to well within ``claim_seconds``.

Batches are pipelined: while the broker confirms one batch, the relay claims the next, in the
transaction (on PostgreSQL the one statement) that marks the batch before it published. The
database and the broker work side by side, and a batch costs one transaction beside its
publish. Batches are still published one after another and a batch is published only after
the one before it was confirmed, so order per entity holds; a failed publish releases the
batch claimed ahead with its own. A relay that has caught up holds the marks of its last
batch for a moment, for the claim that the next commit brings to make: while commits come
one by one, each costs the relay one write transaction. On a SQLite file the relay writes
through a connection on a thread of its own, one hop per transaction (see
:mod:`tidings.outbox.sqlite`).

A relay wakes when an outbox of the same process commits (:attr:`Outbox.committed`), on
PostgreSQL when any process commits (``LISTEN``/``NOTIFY``), and every ``poll_interval``
regardless (every ``max_backoff`` at most while it cannot ``LISTEN``).

A published row is kept for ``retention`` (replay reads it), then deleted.

With a :class:`~tidings.control.Recorder`, each row the broker confirmed adds a
``published`` trace record (kept in memory; the recorder writes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers.base import Broker, Message
from tidings.control import Recorder, TraceRecord, process_name
from tidings.db import READ_ONLY
from tidings.errors import BrokerError
from tidings.events.model import utc_now
from tidings.metrics import OUTBOX_LAG, PUBLISHED
from tidings.outbox import postgres
from tidings.outbox.claims import Claimed, Claims
from tidings.outbox.table import outbox_table as t
from tidings.outbox.writer import Outbox

__all__ = ["Relay"]

log = logging.getLogger("tidings.relay")

_HOLD_SECONDS = 0.02
"""How long a caught-up relay holds the marks of its last batch for the claim that the next
commit brings: while commits come one by one, each costs one write transaction instead of
two (on SQLite, the write lock taken once). Far below any claim's lease, so the rows stay
this relay's meanwhile; should it die, they are published again (at least once)."""

_PASS_SECONDS = 5.0
"""How long one pass of :meth:`Relay.run_once` goes on while there is more to publish: then
the run loop has its turn (retention, stop) and the lag gauge is read again."""


class Relay:
    """Publishes the outbox of one database to a broker.

    ``run()`` loops until :meth:`stop`: it publishes whatever is pending, then waits for the
    in-process :attr:`Outbox.committed` signal, a PostgreSQL notification, or
    ``poll_interval``. While the broker (or the connection to PostgreSQL) fails it backs off
    (up to ``max_backoff``) and catches up when it returns; nothing is marked published
    unless the broker confirmed it.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        broker: Broker,
        *,
        outbox: Outbox | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        claim_seconds: float = 30.0,
        retention: timedelta = timedelta(days=7),
        max_backoff: float = 5.0,
        name: str | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self.broker = broker
        self.outbox = outbox
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.claim_seconds = claim_seconds
        self.retention = retention
        self.max_backoff = max_backoff
        self.name = name or f"relay-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._claims = Claims(engine, name=self.name, claim_seconds=claim_seconds)
        self.recorder = recorder
        self.published = 0
        self._stopping = asyncio.Event()
        self._wakeups: postgres.Wakeups | None = None
        self._held: list[int] = []

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batches in hand (the one publishing and the
        one claimed ahead of it)."""
        self._stopping.set()

    async def run(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._wakeups = postgres.Wakeups(self.engine)
        try:
            await self._run()
        finally:
            try:
                await self._mark_held()
            except (BrokerError, OSError, DBAPIError, sqlite3.Error) as exc:
                log.warning("relay: cannot mark %d published rows (%s)", len(self._held), exc)
            await self._claims.close()
            if self._wakeups is not None:
                await self._wakeups.close()
                self._wakeups = None

    async def _run(self) -> None:
        backoff = 0.0
        last_cleanup = 0.0
        loop = asyncio.get_running_loop()
        woken = False  # by a commit or a notification, not by the poll: there is work
        while not self._stopping.is_set():
            if self.outbox is not None:
                self.outbox.committed.clear()
            try:
                if self._wakeups is not None and not self._wakeups.listening:
                    await self._wakeups.start()
                if self._wakeups is not None:
                    self._wakeups.event.clear()
                _, caught_up = await self._pass(check=not woken, hold=True)
                woken = False
                if self._held:
                    woken = await self._wait_for_work(_HOLD_SECONDS)
                    if not woken:
                        await self._mark_held()
                if loop.time() - last_cleanup > 60:
                    last_cleanup = loop.time()
                    await self.delete_expired()
                backoff = 0.0
            except (BrokerError, OSError, DBAPIError, sqlite3.Error) as exc:
                # Every database error is waited out, not only a dropped connection: a
                # server that is starting up refuses connections with an ordinary error,
                # and a relay that stopped would leave the API accepting writes that are
                # never published.
                backoff = min(self.max_backoff, max(0.1, backoff * 2))
                log.warning("relay: cannot publish (%s); retrying in %.1fs", exc, backoff)
                woken = False
                await self._sleep(backoff)
                continue
            if caught_up and not woken:
                woken = await self._wait_for_work(self._poll_seconds())

    async def run_once(self) -> int:
        """Publish what is pending, batch after batch, pipelined; return how many rows were
        published.

        Returns when a claim made with no batch in flight comes back short (caught up), after
        about :data:`_PASS_SECONDS` while more keeps coming, or on :meth:`stop`; nothing this
        relay claimed is left unpublished or unmarked when it returns.
        """
        try:
            published, _ = await self._pass(check=True, hold=False)
        finally:
            await self._claims.close()
        return published

    async def _pass(self, *, check: bool, hold: bool) -> tuple[int, bool]:
        """:meth:`run_once`; also whether the outbox is caught up. A claim made while a batch
        is in flight leaves that batch's rows out, and on PostgreSQL also the later rows of
        their entities, until it is marked. The lag gauge is set from each batch claimed, and
        by :meth:`_lag`.

        ``check``: first read whether anything waits (see :meth:`_lag`); a relay woken by a
        commit knows. ``hold``: a last batch that catches up is not marked at once but held
        (:attr:`_held`), for the claim of the next pass to mark; the first claim of a pass
        marks what the pass before held."""
        if check and not await self._lag():
            return 0, True
        loop = asyncio.get_running_loop()
        until = loop.time() + _PASS_SECONDS
        published = 0
        rows = await self._claims.claim(self.batch_size, marking=self._held, busy=())
        self._held = []
        alone = True  # claimed with no batch in flight: a short batch means caught up
        done: list[int] = []  # confirmed by the broker, not marked yet
        while rows:
            _set_lag(rows)
            caught_up = alone and len(rows) < self.batch_size
            ahead: asyncio.Task[list[Claimed]] | None = None
            if not caught_up and not self._stopping.is_set() and loop.time() < until:
                ahead = asyncio.create_task(
                    self._claims.claim(self.batch_size, marking=done, busy=[r.seq for r in rows])
                )
            confirmed: list[int] = []
            try:
                if ahead is not None:
                    await asyncio.sleep(0)  # the claim is sent before encoding takes the loop
                await self._publish(rows, confirmed)
            except BaseException:
                await self._give_back(ahead, [*done, *confirmed])
                raise
            published += len(rows)
            self.published += len(rows)
            if ahead is None:
                if hold and caught_up and not self._stopping.is_set():
                    self._held = [*done, *confirmed]
                else:
                    await self._claims.mark_published([*done, *confirmed])
                return published, caught_up
            rows, done, alone = await ahead, confirmed, False
            if not rows:  # nothing beside the batch in flight: claim again once it is marked
                rows = await self._claims.claim(self.batch_size, marking=done, busy=())
                done, alone = [], True
        return published, True

    async def _mark_held(self) -> None:
        """Mark the rows held published (see :meth:`_pass`)."""
        await self._claims.mark_published(self._held)
        self._held = []

    async def _publish(self, rows: Sequence[Claimed], confirmed: list[int]) -> None:
        """Publish ``rows`` topic by topic, adding each topic's seqs to ``confirmed`` as the
        broker confirms them."""
        by_topic: dict[str, list[Claimed]] = {}
        for row in rows:
            by_topic.setdefault(row.topic, []).append(row)
        for topic, topic_rows in by_topic.items():
            await self.broker.publish(topic, [r.message for r in topic_rows])
            if self.recorder is not None:
                self._trace(topic, [r.message for r in topic_rows])
            PUBLISHED.labels(topic).inc(len(topic_rows))
            confirmed.extend(r.seq for r in topic_rows)

    async def _give_back(self, ahead: asyncio.Task[list[Claimed]] | None, done: list[int]) -> None:
        """After a failed publish: let the claim ahead finish, mark what the broker confirmed
        and release every other claim of this relay, the rows claimed ahead included."""
        if ahead is not None:
            await asyncio.wait([ahead])
            if not ahead.cancelled() and ahead.exception() is not None:
                log.debug("relay: claim ahead failed (%s)", ahead.exception())
        await self._claims.mark_published(done)
        await self._claims.release()

    def _trace(self, topic: str, messages: Sequence[Message]) -> None:
        assert self.recorder is not None
        at, process = utc_now(), process_name()
        for message in messages:
            self.recorder.add(
                TraceRecord(
                    correlation_id=message.headers.get("correlation-id", ""),
                    event_id=message.id,
                    event_type=message.event_type,
                    entity_id=message.key,
                    outcome="published",
                    process=process,
                    at=at,
                    topic=topic,
                )
            )

    async def pending(self) -> int:
        """How many rows wait to be published."""
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(func.count()).select_from(t).where(t.c.published_at.is_(None))
            )
            return int(result.scalar_one())

    async def delete_expired(self) -> int:
        """Delete published rows older than ``retention``."""
        cutoff = utc_now() - self.retention
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.published_at < cutoff))
            return int(result.rowcount)

    async def _lag(self) -> bool:
        """Set the lag gauge; whether anything waits. A read, so that an idle relay never
        takes SQLite's write lock."""
        async with self._reader.connect() as conn:
            oldest = await conn.scalar(_OLDEST)
        lag = 0.0 if oldest is None else (utc_now() - _aware(oldest)).total_seconds()
        OUTBOX_LAG.set(max(0.0, lag))
        return oldest is not None

    def _poll_seconds(self) -> float:
        if self._wakeups is not None and not self._wakeups.listening:
            return min(self.poll_interval, self.max_backoff)
        return self.poll_interval

    async def _wait_for_work(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a commit, a notification or :meth:`stop`; whether one
        came."""
        signals = [self._stopping]
        if self.outbox is not None:
            signals.append(self.outbox.committed)
        if self._wakeups is not None:
            signals.append(self._wakeups.event)
        if any(signal.is_set() for signal in signals):
            return True
        waiters = [asyncio.ensure_future(signal.wait()) for signal in signals]
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
        return bool(done)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


_OLDEST = select(t.c.created_at).where(t.c.published_at.is_(None)).order_by(t.c.seq).limit(1)


def _set_lag(rows: Sequence[Claimed]) -> None:
    """Set the lag gauge from the oldest of the rows just claimed."""
    oldest = min(row.created_at for row in rows)
    OUTBOX_LAG.set(max(0.0, (utc_now() - _aware(oldest)).total_seconds()))


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
