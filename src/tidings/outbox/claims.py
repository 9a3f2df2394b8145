"""What a relay writes on the outbox rows: claims (short leases), marks (published) and
releases, in as few statements as the database allows.

A claim may also mark the batch before it published, in the same transaction (on
PostgreSQL the same statement, see :func:`tidings.outbox.postgres.claim`), and may leave out
the batch the relay has in flight. A mark keeps the time of a row marked already, so that
marking twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Executable, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers.base import Message
from tidings.events.model import utc_now
from tidings.outbox import postgres
from tidings.outbox.table import outbox_table as t

__all__ = ["Claimed", "Claims"]


class Claimed(NamedTuple):
    """A claimed row, as the broker takes it."""

    seq: int
    topic: str
    message: Message


class Claims:
    """The claims of the relay ``name`` on the outbox of ``engine``."""

    def __init__(self, engine: AsyncEngine, *, name: str, claim_seconds: float) -> None:
        self.engine = engine
        self.name = name
        self.claim_seconds = claim_seconds
        self._postgres = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def claim(
        self, limit: int, *, marking: Sequence[int], busy: Sequence[int]
    ) -> list[Claimed]:
        """Mark ``marking`` published, then claim up to ``limit`` rows in ``seq`` order,
        leaving out ``busy`` (the batch in flight); one transaction."""
        now = utc_now()
        claimable = and_(
            t.c.published_at.is_(None),
            or_(t.c.claimed_until.is_(None), t.c.claimed_until < now, t.c.claimed_by == self.name),
        )
        if busy:
            claimable = and_(claimable, self._outside(busy))
        values = {
            "claimed_by": self.name,
            "claimed_until": now + timedelta(seconds=self.claim_seconds),
        }
        if self._postgres:
            statement = postgres.claim(
                claimable=claimable,
                limit=limit,
                values=values,
                returning=_CLAIMED,
                published=marking,
                published_values=_published(),
            )
            async with self._autocommit.connect() as conn:
                rows = (await conn.execute(statement)).all()
        else:
            async with self.engine.begin() as conn:
                if marking:
                    await conn.execute(self._marked(marking))
                statement = self._claim_in_turn(claimable, limit, now, values)
                rows = (await conn.execute(statement)).all()
        return sorted(map(_claimed, rows))

    async def mark_published(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._write(self._marked(seqs))

    async def release(self) -> None:
        """Give up every claim of this relay on unpublished rows."""
        await self._write(
            update(t)
            .where(and_(t.c.claimed_by == self.name, t.c.published_at.is_(None)))
            .values(claimed_by=None, claimed_until=None)
        )

    def _claim_in_turn(
        self, claimable: ColumnElement[bool], limit: int, now: datetime, values: dict[str, Any]
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
        eligible = select(t.c.seq).where(claimable, ~blocked).order_by(t.c.seq).limit(limit)
        return (
            update(t)
            .where(t.c.seq.in_(eligible.scalar_subquery()))
            .values(**values)
            .returning(*_CLAIMED)
        )

    def _marked(self, seqs: Sequence[int]) -> Executable:
        among = postgres.among(t.c.seq, seqs) if self._postgres else t.c.seq.in_(seqs)
        return update(t).where(among).values(**_published())

    def _outside(self, seqs: Sequence[int]) -> ColumnElement[bool]:
        return postgres.outside(t.c.seq, seqs) if self._postgres else t.c.seq.not_in(seqs)

    async def _write(self, statement: Executable) -> None:
        """One statement in a transaction of its own (on PostgreSQL without the round trips
        of ``BEGIN`` and ``COMMIT``)."""
        if self._postgres:
            async with self._autocommit.connect() as conn:
                await conn.execute(statement)
        else:
            async with self.engine.begin() as conn:
                await conn.execute(statement)


_CLAIMED = (t.c.seq, t.c.event_id, t.c.topic, t.c.event_type, t.c.entity_id, t.c.body, t.c.headers)


def _published() -> dict[str, Any]:
    return {
        "published_at": func.coalesce(t.c.published_at, utc_now()),
        "claimed_by": None,
        "claimed_until": None,
    }


def _claimed(row: Sequence[Any]) -> Claimed:
    # By position: reading a row's attributes by name costs more than the rest of a message.
    seq, event_id, topic, event_type, entity_id, body, headers = row
    return Claimed(seq, topic, Message(event_id, event_type, entity_id, bytes(body), headers or {}))
