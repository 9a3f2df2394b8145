"""What a relay writes on the outbox rows: claims (short leases), marks (published) and
releases, in as few statements as the database allows.

A claim may also mark the batch before it published, in the same transaction (on
PostgreSQL the same statement, see :func:`tidings.outbox.postgres.claim`), and may leave out
the batch the relay has in flight. A mark keeps the time of a row marked already, so that
marking twice is harmless.

Every statement is built once, with the time, the relay's name and the rows as parameters:
building and compiling a statement of this size costs more CPU than running it on SQLite.
On a SQLite file they run on a connection of the relay's own, a transaction per thread hop
(see :mod:`tidings.outbox.sqlite`); the engine's statements remain for an in-memory
database, which no second connection can open.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers.base import Message
from tidings.events.model import utc_now
from tidings.outbox import postgres
from tidings.outbox.sqlite import SqliteClaims
from tidings.outbox.table import outbox_table as t

__all__ = ["Claimed", "Claims"]


class Claimed(NamedTuple):
    """A claimed row, as the broker takes it."""

    seq: int
    topic: str
    message: Message
    created_at: datetime


class Claims:
    """The claims of the relay ``name`` on the outbox of ``engine``."""

    def __init__(self, engine: AsyncEngine, *, name: str, claim_seconds: float) -> None:
        self.engine = engine
        self.name = name
        self.claim_seconds = claim_seconds
        self._postgres = engine.dialect.name == "postgresql"
        database = engine.url.database
        self._sqlite = (
            SqliteClaims(Path(database))
            if engine.dialect.name == "sqlite" and database and database != ":memory:"
            else None
        )
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._claims: dict[tuple[int, bool], Executable] = {}
        rows = postgres.array if self._postgres else _expanding
        self._done, self._busy = rows("done"), rows("busy")
        self._mark = update(t).where(self._among(self._done)).values(**_PUBLISHED)
        self._release = (
            update(t)
            .where(t.c.claimed_by == _NAME, t.c.published_at.is_(None))
            .values(claimed_by=None, claimed_until=None)
        )

    async def claim(
        self, limit: int, *, marking: Sequence[int], busy: Sequence[int]
    ) -> list[Claimed]:
        """Mark ``marking`` published, then claim up to ``limit`` rows in ``seq`` order,
        leaving out ``busy`` (the batch in flight); one transaction."""
        now = utc_now()
        until = now + timedelta(seconds=self.claim_seconds)
        if self._sqlite is not None:
            claimed = await self._sqlite.claim(
                name=self.name, now=now, until=until, limit=limit, marking=marking, busy=busy
            )
            return sorted(map(_claimed, claimed))
        params: dict[str, Any] = {
            "now": now,
            "name": self.name,
            "until": until,
        }
        if busy:
            params["busy"] = list(busy)
        statement = self._claim(limit, busy=bool(busy))
        if self._postgres:
            params["done"] = list(marking)
            async with self._autocommit.connect() as conn:
                rows = (await conn.execute(statement, params)).all()
        else:
            async with self.engine.begin() as conn:
                if marking:
                    await conn.execute(self._mark, {"done": list(marking), "now": now})
                rows = (await conn.execute(statement, params)).all()
        return sorted(map(_claimed, rows))

    async def mark_published(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        if self._sqlite is not None:
            await self._sqlite.mark(seqs, utc_now())
        else:
            await self._write(self._mark, {"done": list(seqs), "now": utc_now()})

    async def release(self) -> None:
        """Give up every claim of this relay on unpublished rows."""
        if self._sqlite is not None:
            await self._sqlite.release(self.name)
        else:
            await self._write(self._release, {"name": self.name})

    async def close(self) -> None:
        """Close the connection of a SQLite file's own thread, if open (it opens again when
        used)."""
        if self._sqlite is not None:
            await self._sqlite.close()

    def _claim(self, limit: int, *, busy: bool) -> Executable:
        key = (limit, busy)
        if key not in self._claims:
            claimable = and_(
                t.c.published_at.is_(None),
                or_(t.c.claimed_until.is_(None), t.c.claimed_until < _NOW, t.c.claimed_by == _NAME),
            )
            if busy:
                claimable = and_(claimable, self._outside(self._busy))
            values = {"claimed_by": _NAME, "claimed_until": _UNTIL}
            if self._postgres:
                self._claims[key] = postgres.claim(
                    claimable=claimable,
                    limit=limit,
                    values=values,
                    returning=_CLAIMED,
                    published=self._done,
                    published_values=_PUBLISHED,
                )
            else:
                self._claims[key] = _claim_in_turn(claimable, limit, values)
        return self._claims[key]

    def _among(self, seqs: BindParameter[Any]) -> ColumnElement[bool]:
        return postgres.among(t.c.seq, seqs) if self._postgres else t.c.seq.in_(seqs)

    def _outside(self, seqs: BindParameter[Any]) -> ColumnElement[bool]:
        return postgres.outside(t.c.seq, seqs) if self._postgres else t.c.seq.not_in(seqs)

    async def _write(self, statement: Executable, params: dict[str, Any]) -> None:
        """One statement in a transaction of its own (on PostgreSQL without the round trips
        of ``BEGIN`` and ``COMMIT``)."""
        if self._postgres:
            async with self._autocommit.connect() as conn:
                await conn.execute(statement, params)
        else:
            async with self.engine.begin() as conn:
                await conn.execute(statement, params)


def _claim_in_turn(
    claimable: ColumnElement[bool], limit: int, values: dict[str, Any]
) -> Executable:
    """One statement that claims, for databases whose write transactions take turns."""
    earlier = t.alias("earlier")
    blocked = exists().where(
        earlier.c.topic == t.c.topic,
        earlier.c.entity_id == t.c.entity_id,
        earlier.c.seq < t.c.seq,
        earlier.c.published_at.is_(None),
        earlier.c.claimed_by != _NAME,
        earlier.c.claimed_until >= _NOW,
    )
    eligible = select(t.c.seq).where(claimable, ~blocked).order_by(t.c.seq).limit(limit)
    return (
        update(t)
        .where(t.c.seq.in_(eligible.scalar_subquery()))
        .values(**values)
        .returning(*_CLAIMED)
    )


# The parameters beside the rows (``done``, ``busy``: one array parameter each on
# PostgreSQL, elsewhere expanded): the time of the statement, the relay, the end of its lease.
_NOW: BindParameter[datetime] = bindparam("now", type_=t.c.claimed_until.type)
_NAME: BindParameter[str] = bindparam("name", type_=t.c.claimed_by.type)
_UNTIL: BindParameter[datetime] = bindparam("until", type_=t.c.claimed_until.type)

_CLAIMED = (
    t.c.seq,
    t.c.event_id,
    t.c.topic,
    t.c.event_type,
    t.c.entity_id,
    t.c.body,
    t.c.headers,
    t.c.created_at,
)

_PUBLISHED: dict[str, Any] = {
    "published_at": func.coalesce(t.c.published_at, _NOW),
    "claimed_by": None,
    "claimed_until": None,
}


def _expanding(key: str) -> BindParameter[Any]:
    """A list parameter, rendered as one placeholder per item."""
    return bindparam(key, expanding=True)


def _claimed(row: Sequence[Any]) -> Claimed:
    # By position: reading a row's attributes by name costs more than the rest of a message.
    seq, event_id, topic, event_type, entity_id, body, headers, created_at = row
    message = Message(event_id, event_type, entity_id, bytes(body), headers or {})
    return Claimed(seq, topic, message, created_at)
