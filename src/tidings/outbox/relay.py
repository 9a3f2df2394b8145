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
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Executable, and_, delete, exists, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers.base import Broker, Message
from tidings.control import Recorder, TraceRecord, process_name
from tidings.db import READ_ONLY
from tidings.errors import BrokerError
from tidings.events.model import utc_now
from tidings.metrics import OUTBOX_LAG, PUBLISHED
from tidings.outbox import postgres
from tidings.outbox.table import outbox_table as t
from tidings.outbox.writer import Outbox

__all__ = ["Relay"]

log = logging.getLogger("tidings.relay")


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
        self.recorder = recorder
        self.published = 0
        self._stopping = asyncio.Event()
        self._wakeups: postgres.Wakeups | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand."""
        self._stopping.set()

    async def run(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._wakeups = postgres.Wakeups(self.engine)
        try:
            await self._run()
        finally:
            if self._wakeups is not None:
                await self._wakeups.close()
                self._wakeups = None

    async def _run(self) -> None:
        backoff = 0.0
        last_cleanup = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if self.outbox is not None:
                self.outbox.committed.clear()
            try:
                if self._wakeups is not None and not self._wakeups.listening:
                    await self._wakeups.start()
                if self._wakeups is not None:
                    self._wakeups.event.clear()
                count = await self.run_once()
                if loop.time() - last_cleanup > 60:
                    last_cleanup = loop.time()
                    await self.delete_expired()
                backoff = 0.0
            except (BrokerError, OSError, DBAPIError) as exc:
                # Every database error is waited out, not only a dropped connection: a
                # server that is starting up refuses connections with an ordinary error,
                # and a relay that stopped would leave the API accepting writes that are
                # never published.
                backoff = min(self.max_backoff, max(0.1, backoff * 2))
                log.warning("relay: cannot publish (%s); retrying in %.1fs", exc, backoff)
                await self._sleep(backoff)
                continue
            if count < self.batch_size:
                await self._wait_for_work()

    async def run_once(self) -> int:
        """Claim and publish one batch; return how many rows were published."""
        rows = await self._claim()
        if not rows:
            return 0
        by_topic: dict[str, list[Any]] = {}
        for row in rows:
            by_topic.setdefault(row.topic, []).append(row)
        published = 0
        try:
            for topic, topic_rows in by_topic.items():
                await self.broker.publish(topic, [_message(r) for r in topic_rows])
                if self.recorder is not None:
                    self._trace(topic_rows)
                await self._mark_published([r.seq for r in topic_rows])
                PUBLISHED.labels(topic).inc(len(topic_rows))
                published += len(topic_rows)
        finally:
            if published < len(rows):
                await self._release()
        self.published += published
        return published

    def _trace(self, rows: Sequence[Any]) -> None:
        assert self.recorder is not None
        at, process = utc_now(), process_name()
        for row in rows:
            self.recorder.add(
                TraceRecord(
                    correlation_id=(row.headers or {}).get("correlation-id", ""),
                    event_id=row.event_id,
                    event_type=row.event_type,
                    entity_id=row.entity_id,
                    outcome="published",
                    process=process,
                    at=at,
                    topic=row.topic,
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

    async def _claim(self) -> Sequence[Any]:
        async with self._reader.connect() as conn:
            oldest = await conn.scalar(
                select(t.c.created_at).where(t.c.published_at.is_(None)).order_by(t.c.seq).limit(1)
            )
        now = utc_now()
        if oldest is None:
            OUTBOX_LAG.set(0)
            return []
        OUTBOX_LAG.set(max(0.0, (now - _aware(oldest)).total_seconds()))
        claimable = and_(
            t.c.published_at.is_(None),
            or_(t.c.claimed_until.is_(None), t.c.claimed_until < now, t.c.claimed_by == self.name),
        )
        values = {
            "claimed_by": self.name,
            "claimed_until": now + timedelta(seconds=self.claim_seconds),
        }
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                rows = await postgres.claim(
                    conn,
                    claimable=claimable,
                    limit=self.batch_size,
                    values=values,
                    returning=_CLAIMED,
                )
            else:
                rows = (await conn.execute(self._claim_in_turn(claimable, now, values))).all()
        return sorted(rows, key=lambda r: r.seq)

    def _claim_in_turn(
        self, claimable: ColumnElement[bool], now: datetime, values: dict[str, Any]
    ) -> Executable:
        """One statement that claims, for databases whose write transactions take turns."""
        earlier = t.alias("earlier")
        blocked = exists().where(
            earlier.c.topic == t.c.topic,
            earlier.c.entity_id == t.c.entity_id,
            earlier.c.seq < t.c.seq,
            earlier.c.published_at.is_(None),
            earlier.c.claimed_by != self.name,
            earlier.c.claimed_until >= now,
        )
        eligible = (
            select(t.c.seq).where(claimable, ~blocked).order_by(t.c.seq).limit(self.batch_size)
        )
        return (
            update(t)
            .where(t.c.seq.in_(eligible.scalar_subquery()))
            .values(**values)
            .returning(*_CLAIMED)
        )

    async def _mark_published(self, seqs: list[int]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.seq.in_(seqs))
                .values(published_at=utc_now(), claimed_by=None, claimed_until=None)
            )

    async def _release(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(and_(t.c.claimed_by == self.name, t.c.published_at.is_(None)))
                .values(claimed_by=None, claimed_until=None)
            )

    async def _wait_for_work(self) -> None:
        signals = [self._stopping]
        if self.outbox is not None:
            signals.append(self.outbox.committed)
        if self._wakeups is not None:
            signals.append(self._wakeups.event)
        timeout = self.poll_interval
        if self._wakeups is not None and not self._wakeups.listening:
            timeout = min(timeout, self.max_backoff)
        waiters = [asyncio.ensure_future(signal.wait()) for signal in signals]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


_CLAIMED = (t.c.seq, t.c.event_id, t.c.topic, t.c.event_type, t.c.entity_id, t.c.body, t.c.headers)


def _message(row: Any) -> Message:
    return Message(
        id=row.event_id,
        event_type=row.event_type,
        key=row.entity_id,
        body=bytes(row.body),
        headers=dict(row.headers or {}),
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
