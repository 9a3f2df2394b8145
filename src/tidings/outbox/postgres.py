"""The outbox on PostgreSQL: claims that skip rows other relays are claiming, and wake-ups by
``LISTEN``/``NOTIFY`` instead of a poll.

Every outbox insert also sends ``pg_notify('tidings_outbox', current_schema())``. PostgreSQL
delivers a notification when its transaction commits and drops it on rollback, and sends one
per transaction for identical ones, so a relay hears of each commit once, at commit. The
payload is the schema, because one database may hold the outboxes of several domains and
``NOTIFY`` channels are per database. Anything else may wake the relays of a schema the same
way, e.g. ``SELECT pg_notify('tidings_outbox', 'person')``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Executable,
    any_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.outbox.table import outbox_table as t

__all__ = ["CHANNEL", "Wakeups", "among", "claim", "notification"]

CHANNEL = "tidings_outbox"

log = logging.getLogger("tidings.relay")


def notification() -> ColumnElement[Any]:
    """What an outbox insert returns to notify the relays of its schema at commit: the
    notification rides on the insert, at no extra round trip."""
    return func.pg_notify(CHANNEL, func.current_schema())


def claim(
    *,
    claimable: ColumnElement[bool],
    limit: int,
    values: dict[str, Any],
    returning: Sequence[ColumnElement[Any]],
    published: BindParameter[Any],
    published_values: dict[str, Any],
) -> Executable:
    """One statement, and so one round trip and one transaction: mark the rows of the array
    parameter ``published`` (set ``published_values`` on them), then claim up to ``limit``
    rows in ``seq`` order, setting ``values`` (the claim) on them and returning
    ``returning`` of each. Built once; the values come as parameters at each execution.

    The ``claimable`` rows are locked with ``FOR UPDATE SKIP LOCKED``, so that relays
    claiming at the same moment take disjoint rows instead of waiting for each other. A row
    that another relay claimed and committed meanwhile is re-checked by PostgreSQL on the
    lock attempt and dropped, as it is no longer claimable. Of the locked rows, only those
    whose every earlier unpublished row of the same entity is locked here as well (or marked
    published by this statement) are claimed: an earlier row held by another relay, whether
    its claim is committed or still in flight, keeps the later rows for a later round, so an
    entity's rows are never published by two relays at once. The statement's snapshot is
    taken before the locks; a row it shows unpublished may have been published since, which
    only keeps a later row back until the next round.
    """
    marked = (
        update(t)
        .where(among(t.c.seq, published))
        .values(**published_values)
        .returning(t.c.seq)
        .cte("marked")
    )
    locked = (
        select(t.c.seq)
        .where(claimable, outside(t.c.seq, published))
        .order_by(t.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    earlier = t.alias("earlier")
    waits = (
        select(earlier.c.seq)
        .where(
            earlier.c.topic == t.c.topic,
            earlier.c.entity_id == t.c.entity_id,
            earlier.c.seq < t.c.seq,
            earlier.c.published_at.is_(None),
            earlier.c.seq.not_in(select(locked.c.seq)),
            outside(earlier.c.seq, published),
        )
        # OFFSET keeps PostgreSQL from turning this into an anti-join, which may hash every
        # unpublished row for each claim; as it is, each claimed row costs one index probe.
        .offset(0)
        .exists()
    )
    return (
        update(t)
        .where(t.c.seq.in_(select(locked.c.seq)), ~waits)
        .values(**values)
        .returning(*returning)
        .add_cte(marked)
    )


def among(column: ColumnElement[int], values: BindParameter[Any]) -> ColumnElement[bool]:
    """``column = ANY(values)``, ``values`` an array parameter (see :func:`array`): one
    prepared statement whatever the count (``IN`` renders one per count), and an index
    look-up per value."""
    return column == any_(values)


def outside(column: ColumnElement[int], values: BindParameter[Any]) -> ColumnElement[bool]:
    """``column NOT IN (SELECT unnest(values))``: a hashed look-up per row, where
    ``<> ALL(values)`` compares each row with every value."""
    return column.not_in(select(func.unnest(values)).scalar_subquery())


def array(key: str) -> BindParameter[Any]:
    """The ``bigint[]`` parameter ``key``."""
    return bindparam(key, type_=ARRAY(BigInteger()))


class Wakeups:
    """One connection of ``engine`` that ``LISTEN``s on :data:`CHANNEL` and sets
    :attr:`event` whenever an outbox of the connection's own schema commits.

    The connection is taken from the engine's pool for as long as it listens. When it is
    lost, :attr:`listening` turns false and :attr:`event` is set, so that the relay wakes,
    checks the outbox and calls :meth:`start` for another; it polls until that succeeds, so
    a lost connection delays publishing, never loses it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.event = asyncio.Event()
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._schema: str | None = None

    @property
    def listening(self) -> bool:
        """Whether the connection is open and listening."""
        return self._driver is not None and not self._driver.is_closed()

    async def start(self) -> bool:
        """Listen (again); True when listening. A failure is logged, not raised: the
        caller's poll goes on."""
        await self.close()
        try:
            conn = await self.engine.connect()
        except Exception as exc:
            log.warning("relay: cannot LISTEN (%s); polling", exc)
            return False
        try:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            self._schema = await driver.fetchval("SELECT current_schema()")
            await driver.add_listener(CHANNEL, self._on_notification)
            driver.add_termination_listener(self._on_termination)
        except Exception as exc:
            log.warning("relay: cannot LISTEN (%s); polling", exc)
            await conn.invalidate()
            await conn.close()
            return False
        self._conn, self._driver = conn, driver
        return True

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._schema:
            self.event.set()

    def _on_termination(self, _conn: Any) -> None:
        self.event.set()

    async def close(self) -> None:
        """Stop listening and give the connection back (a lost one is discarded)."""
        conn, driver = self._conn, self._driver
        self._conn = self._driver = None
        if conn is None:
            return
        try:
            if not driver.is_closed():
                driver.remove_termination_listener(self._on_termination)
                await driver.remove_listener(CHANNEL, self._on_notification)
                await conn.close()
                return
        except Exception as exc:
            log.debug("relay: UNLISTEN failed (%s)", exc)
        await conn.invalidate()
        await conn.close()
