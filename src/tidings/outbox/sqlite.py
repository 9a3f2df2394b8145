"""A relay's claims, marks and releases on a SQLite outbox, each one whole transaction on a
connection of the relay's own thread (:class:`tidings.brokers.sqlite.database.Database`).

Through the engine, a transaction is a thread hop per statement (``BEGIN``, each statement,
its cursor, ``COMMIT``), and the write lock is held across as many event-loop turns: in a
process that also serves requests, those requests then wait for the lock, in SQLite's busy
handler, whose sleeps start at a millisecond. Here a transaction is one hop, and the lock is
held for the time its SQL takes.

The SQL is the same as the engine's (see :mod:`tidings.outbox.claims`); values go through
the column types' own converters, so times compare with those the engine wrote. A claim or
mark lost to a power cut (``synchronous = NORMAL``) only means a row published again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect

from tidings.brokers.sqlite.database import Database, immediate
from tidings.outbox.table import outbox_table as t

__all__ = ["SqliteClaims"]


def _converter(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if convert is None:
        raise RuntimeError("the SQLite dialect has no converter for the outbox's times")
    return convert


_DIALECT = sqlite_dialect.dialect()
_TIME_IN = _converter(t.c.claimed_until.type.dialect_impl(_DIALECT).bind_processor(_DIALECT))
_TIME_OUT = _converter(t.c.created_at.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None))

ClaimedRow = tuple[Any, ...]
"""seq, event_id, topic, event_type, entity_id, body, headers, created_at: as the engine
returns them."""

_MARK = """
UPDATE tidings_outbox
   SET published_at = COALESCE(published_at, :now), claimed_by = NULL, claimed_until = NULL
 WHERE seq IN (SELECT value FROM json_each(:done))
"""

# Claimable: unpublished, unclaimed (or the lease ran out, or ours), not in flight, and no
# earlier unpublished row of its entity is held by another relay's live claim.
_CLAIM = """
UPDATE tidings_outbox
   SET claimed_by = :name, claimed_until = :until
 WHERE seq IN (
       SELECT o.seq FROM tidings_outbox AS o
        WHERE o.published_at IS NULL
          AND (o.claimed_until IS NULL OR o.claimed_until < :now OR o.claimed_by = :name)
          AND o.seq NOT IN (SELECT value FROM json_each(:busy))
          AND NOT EXISTS (
              SELECT 1 FROM tidings_outbox AS e
               WHERE e.topic = o.topic AND e.entity_id = o.entity_id AND e.seq < o.seq
                 AND e.published_at IS NULL
                 AND e.claimed_by != :name AND e.claimed_until >= :now)
        ORDER BY o.seq
        LIMIT :limit)
RETURNING seq, event_id, topic, event_type, entity_id, body, headers, created_at
"""

_RELEASE = """
UPDATE tidings_outbox SET claimed_by = NULL, claimed_until = NULL
 WHERE claimed_by = :name AND published_at IS NULL
"""


class SqliteClaims:
    """The statements of :class:`tidings.outbox.claims.Claims` on the SQLite file ``path``.
    The connection opens at first use; :meth:`close` closes it (it opens again if used)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Database | None = None

    async def claim(
        self,
        *,
        name: str,
        now: datetime,
        until: datetime,
        limit: int,
        marking: Sequence[int],
        busy: Sequence[int],
    ) -> list[ClaimedRow]:
        params = {
            "name": name,
            "now": _TIME_IN(now),
            "until": _TIME_IN(until),
            "limit": limit,
            "busy": json.dumps(list(busy)),
        }
        done = json.dumps(list(marking)) if marking else None

        def run(conn: sqlite3.Connection) -> list[ClaimedRow]:
            with immediate(conn):
                if done is not None:
                    conn.execute(_MARK, {"now": params["now"], "done": done})
                rows = conn.execute(_CLAIM, params).fetchall()
            return [_row(row) for row in rows]

        return await (await self._database()).run(run)

    async def mark(self, seqs: Sequence[int], now: datetime) -> None:
        params = {"now": _TIME_IN(now), "done": json.dumps(list(seqs))}
        await (await self._database()).run(lambda conn: _write(conn, _MARK, params))

    async def release(self, name: str) -> None:
        await (await self._database()).run(lambda conn: _write(conn, _RELEASE, {"name": name}))

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _database(self) -> Database:
        if self._db is None:
            db = Database(self.path, _setup, label="sqlite outbox")
            await db.open()
            self._db = db
        return self._db


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


def _write(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> None:
    with immediate(conn):
        conn.execute(sql, params)


def _row(row: tuple[Any, ...]) -> ClaimedRow:
    seq, event_id, topic, event_type, entity_id, body, headers, created_at = row
    return (
        seq,
        event_id,
        topic,
        event_type,
        entity_id,
        bytes(body),
        json.loads(headers) if headers else {},
        _TIME_OUT(created_at),
    )
