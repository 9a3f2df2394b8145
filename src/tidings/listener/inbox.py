"""The inbox: which events a subscription has already applied, kept in the listener's own
database and written in the same transaction as the handler's effect.

Because the inbox row and the effect commit together, a redelivered event (after a crash, a
lease expiry or a duplicate publish) finds its row and has no second effect; and an effect
that rolled back leaves no row, so the event is applied when it comes back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, String, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db import metadata
from tidings.events.model import utc_now

__all__ = ["forget_before", "inbox_table", "record", "record_many"]

inbox_table = Table(
    "tidings_inbox",
    metadata,
    Column("subscription", String(100), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)
Index("ix_tidings_inbox_processed_at", inbox_table.c.processed_at)


# The statements are built once; the rows go in as parameters, so that SQLAlchemy compiles
# each statement once (rows written into a statement make it a new one for every batch).
_ADD = {
    "postgresql": postgresql.insert(inbox_table).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(inbox_table).on_conflict_do_nothing(),
}
_ADD_RETURNING = {name: add.returning(inbox_table.c.event_id) for name, add in _ADD.items()}


def _dialect(session: AsyncSession) -> str:
    return "postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"


async def record(session: AsyncSession, subscription: str, event_id: str) -> bool:
    """Add (subscription, event_id) in the session's transaction. True when it is new;
    False when the event was already applied, in which case nothing was written."""
    values = {"subscription": subscription, "event_id": event_id, "processed_at": utc_now()}
    result = await session.execute(_ADD[_dialect(session)], values)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_many(session: AsyncSession, subscription: str, event_ids: list[str]) -> set[str]:
    """Add every (subscription, event_id) in one statement, in the session's transaction.
    Returns the ids that were new; the others were already applied."""
    if not event_ids:
        return set()
    now = utc_now()
    rows = [{"subscription": subscription, "event_id": e, "processed_at": now} for e in event_ids]
    # One INSERT of every row (SQLAlchemy's "insertmanyvalues"), RETURNING the new ones.
    result = await session.execute(_ADD_RETURNING[_dialect(session)], rows)
    return set(result.scalars().all())


async def forget_before(session: AsyncSession, cutoff: datetime) -> int:
    """Delete inbox rows older than ``cutoff`` (events that old are past redelivery)."""
    result = await session.execute(delete(inbox_table).where(inbox_table.c.processed_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
