"""The control store: one database where operators steer subscriptions and where running
processes report what they do.

* **subscriptions**: every subscription declared through tidings (``tidings up``, ``tidings
  topology apply``, a listener at start), with its policies;
* **controls**: paused, in-flight and rate limits an operator set; every listener of the
  subscription, in any process, reads them each second and follows them, and reads them
  again when it starts (so they survive a restart);
* **listeners**: a heartbeat per listener process (in flight, settled, events per second);
* **trace**: what happened to each event, where and when (published by a relay; applied,
  skipped as stale or duplicate, retried, dead-lettered by each subscription's listener).

The store is kept by tidings' own processes; it holds no event a domain depends on. Losing
it loses controls and history, never an event.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.control.tables import (
    controls_table,
    listeners_table,
    metadata,
    subscriptions_table,
    trace_table,
)
from tidings.db import create_engine
from tidings.errors import ConfigurationError
from tidings.topology import Subscription, Topology

__all__ = [
    "UNSET",
    "ControlStore",
    "Controls",
    "ListenerBeat",
    "TraceRecord",
    "process_name",
]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""Leave this control as it is (for :meth:`ControlStore.set_controls`)."""

_DETAIL_MAX = 1000


def process_name() -> str:
    """``host:pid``: how a process names itself in heartbeats and trace records."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time tidings stores is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Controls:
    """What an operator set on one subscription. ``None`` limits mean: as declared."""

    subscription: str
    paused: bool = False
    in_flight: int | None = None
    rate: float | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ListenerBeat:
    """One listener process's last report."""

    subscription: str
    process: str
    in_flight: int
    settled: int
    per_second: float
    paused: bool
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One step of one event: ``outcome`` is ``published`` (with ``topic``) or what a
    subscription's listener did with it (with ``subscription``): ``applied``, ``stale``,
    ``duplicate``, ``unhandled``, ``retried``, ``dead_lettered``."""

    correlation_id: str
    event_id: str
    event_type: str
    entity_id: str
    outcome: str
    process: str
    at: datetime
    topic: str | None = None
    subscription: str | None = None
    attempt: int | None = None
    detail: str | None = None


class ControlStore:
    """The control tables in one database. Make one with :meth:`open` (which creates or
    upgrades the tables) or around an engine whose tables exist."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[ControlStore]:
        """The store at ``url`` (see :meth:`tidings.config.Settings.control_database_url`),
        its tables brought up to date; the engine is disposed when the block ends."""
        from tidings.migrations import upgrade

        engine = create_engine(url)
        try:
            await upgrade(engine, metadata)
            yield cls(engine)
        finally:
            await engine.dispose()

    def _insert(self, conn: AsyncConnection) -> Any:
        return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert

    # -- subscriptions ------------------------------------------------------------------

    async def declared(self, topology: Topology) -> None:
        """Remember the subscriptions of ``topology`` (replacing earlier declarations)."""
        if not topology.subscriptions:
            return
        now = _now()
        rows = [
            {"name": s.name, "spec": s.model_dump(mode="json"), "declared_at": now}
            for s in topology.subscriptions
        ]
        async with self.engine.begin() as conn:
            insert = self._insert(conn)(subscriptions_table).values(rows)
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[subscriptions_table.c.name],
                    set_={"spec": insert.excluded.spec, "declared_at": insert.excluded.declared_at},
                )
            )

    async def subscriptions(self) -> list[Subscription]:
        """Every subscription declared through tidings, by name."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(subscriptions_table.c.spec).order_by(subscriptions_table.c.name)
            )
            return [Subscription.model_validate(spec) for (spec,) in rows]

    async def subscription(self, name: str) -> Subscription | None:
        async with self.engine.connect() as conn:
            spec = await conn.scalar(
                select(subscriptions_table.c.spec).where(subscriptions_table.c.name == name)
            )
        return None if spec is None else Subscription.model_validate(spec)

    # -- controls -----------------------------------------------------------------------

    async def controls(self, subscription: str) -> Controls:
        """What is set on ``subscription`` (nothing set: not paused, limits as declared)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(controls_table).where(controls_table.c.subscription == subscription)
                )
            ).first()
        return Controls(subscription) if row is None else _controls(row)

    async def all_controls(self) -> dict[str, Controls]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(controls_table))
            return {row.subscription: _controls(row) for row in rows}

    async def set_controls(
        self,
        subscription: str,
        *,
        paused: bool | _Unset = UNSET,
        in_flight: int | None | _Unset = UNSET,
        rate: float | None | _Unset = UNSET,
    ) -> Controls:
        """Change what is given (``None`` limits go back to the declared ones) and return
        the controls now in force. Raises :class:`ConfigurationError` for a limit below 1
        (in flight) or not above 0 (rate)."""
        if isinstance(in_flight, int) and not 1 <= in_flight <= 10_000:
            raise ConfigurationError("in-flight must be between 1 and 10000")
        if isinstance(rate, int | float) and not rate > 0:
            raise ConfigurationError("rate must be above 0 events per second")
        changes: dict[str, Any] = {"updated_at": _now()}
        if not isinstance(paused, _Unset):
            changes["paused"] = paused
        if not isinstance(in_flight, _Unset):
            changes["in_flight"] = in_flight
        if not isinstance(rate, _Unset):
            changes["rate"] = None if rate is None else float(rate)
        row = {"subscription": subscription, "paused": False, "in_flight": None, "rate": None}
        async with self.engine.begin() as conn:
            insert = self._insert(conn)(controls_table).values({**row, **changes})
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[controls_table.c.subscription], set_=changes
                )
            )
        return await self.controls(subscription)

    # -- listener heartbeats ------------------------------------------------------------

    async def beat(self, beat: ListenerBeat) -> None:
        """Record a listener process's report (replacing its previous one)."""
        values = {
            "subscription": beat.subscription,
            "process": beat.process,
            "in_flight": beat.in_flight,
            "settled": beat.settled,
            "per_second": beat.per_second,
            "paused": beat.paused,
            "seen_at": beat.seen_at,
        }
        async with self.engine.begin() as conn:
            insert = self._insert(conn)(listeners_table).values(values)
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[listeners_table.c.subscription, listeners_table.c.process],
                    set_={k: v for k, v in values.items() if k not in ("subscription", "process")},
                )
            )

    async def gone(self, subscription: str, process: str) -> None:
        """Forget a listener process that stopped."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(listeners_table).where(
                    listeners_table.c.subscription == subscription,
                    listeners_table.c.process == process,
                )
            )

    async def listeners(self, *, within: float = 10.0) -> list[ListenerBeat]:
        """Listener processes heard from in the last ``within`` seconds."""
        since = _now() - timedelta(seconds=within)
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(listeners_table)
                .where(listeners_table.c.seen_at >= since)
                .order_by(listeners_table.c.subscription, listeners_table.c.process)
            )
            return [
                ListenerBeat(
                    subscription=r.subscription,
                    process=r.process,
                    in_flight=r.in_flight,
                    settled=r.settled,
                    per_second=r.per_second,
                    paused=r.paused,
                    seen_at=_aware(r.seen_at),
                )
                for r in rows
            ]

    # -- trace --------------------------------------------------------------------------

    async def record(self, records: Sequence[TraceRecord]) -> None:
        """Append trace records (one statement)."""
        if not records:
            return
        rows = [
            {
                "correlation_id": r.correlation_id[:200],
                "event_id": r.event_id[:36],
                "event_type": r.event_type[:200],
                "entity_id": r.entity_id[:200],
                "topic": r.topic,
                "subscription": r.subscription,
                "outcome": r.outcome,
                "attempt": r.attempt,
                "detail": None if r.detail is None else r.detail[:_DETAIL_MAX],
                "process": r.process[:200],
                "at": r.at,
            }
            for r in records
        ]
        async with self.engine.begin() as conn:
            await conn.execute(trace_table.insert(), rows)

    async def trace(self, correlation_id: str, *, limit: int = 10_000) -> list[TraceRecord]:
        """Every record of ``correlation_id``, oldest first (by the time each process
        recorded it; records of one time in the order they were written)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(trace_table)
                .where(trace_table.c.correlation_id == correlation_id)
                .order_by(trace_table.c.at, trace_table.c.seq)
                .limit(limit)
            )
            return [_record(r) for r in rows]

    async def recent(self, *, limit: int = 100) -> list[TraceRecord]:
        """The latest records, newest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(trace_table).order_by(trace_table.c.seq.desc()).limit(limit)
            )
            return [_record(r) for r in rows]

    async def prune(self, older_than: timedelta) -> int:
        """Delete trace records and heartbeats older than ``older_than``; returns how many
        trace records went."""
        cutoff = _now() - older_than
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(trace_table).where(trace_table.c.at < cutoff))
            await conn.execute(delete(listeners_table).where(listeners_table.c.seen_at < cutoff))
        return int(result.rowcount or 0)


def _controls(row: Any) -> Controls:
    return Controls(
        subscription=row.subscription,
        paused=bool(row.paused),
        in_flight=row.in_flight,
        rate=row.rate,
        updated_at=_aware(row.updated_at),
    )


def _record(row: Any) -> TraceRecord:
    return TraceRecord(
        correlation_id=row.correlation_id,
        event_id=row.event_id,
        event_type=row.event_type,
        entity_id=row.entity_id,
        outcome=row.outcome,
        process=row.process,
        at=_aware(row.at),
        topic=row.topic,
        subscription=row.subscription,
        attempt=row.attempt,
        detail=row.detail,
    )
