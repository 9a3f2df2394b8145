"""The version guard: an older event never overwrites newer data in a subset.

Update events carry only the fields that changed, so one version per copied record is not
enough: after v3 (a new surname) the copy must still take v2's first name when v2 arrives
late. The guard therefore keeps, for every copy, the version of the last write of each
field, in the listener's own database, and is used in the handler's transaction so that it
commits (or rolls back) with the subset write. Whatever the delivery order and however many
duplicates, the copy ends as in-order, once-only delivery would leave it.

A copy is named by ``source_id`` (the copied entity, e.g. a person) and ``holder_id`` (the
record holding the copy, e.g. a tenure); each pair is guarded on its own.

Membership (a person added to or removed from a tenure) is guarded with the pseudo-field
:data:`MEMBERSHIP` where the membership events and the field updates are versions of the
same source entity (a person's copy of each of their tenures). A handler that keeps
``holder.members[source_id]`` follows three rules; each makes a removal a tombstone that an
older event cannot undo:

- **added at v** (the event carries every field of the subset)::

      fresh = await guard.fresh(s, source_id=..., holder_id=..., version=v,
                                fields=[MEMBERSHIP, *data])
      if MEMBERSHIP in fresh:
          members[source_id] = apply_changes(members.get(source_id, {}), data, fresh)

- **removed at v**: a stored version above ``v`` means the source was present after ``v``
  (so it was added again), and the removal is stale::

      if max((await guard.versions(s, ...)).values(), default=v) <= v:
          await guard.fresh(s, ..., version=v, fields=[MEMBERSHIP])
          members.pop(source_id, None)

- **updated at v**, for a holder that the event lists: if the copy is present, apply
  ``apply_changes(copy, changes, await guard.fresh(...))``. If it is absent and the stored
  :data:`MEMBERSHIP` version is above ``v``, it was removed later: skip. Otherwise its add
  is still on the way: raise :class:`~tidings.listener.Retry` so the update lands after it.

Rows are never deleted by a removal (they are the tombstone); :meth:`VersionGuard.forget`
drops them only when the holder record itself is deleted. Load the holder record for update
(``SELECT ... FOR UPDATE`` on PostgreSQL) before consulting the guard, so that two instances
of a listener never decide about the same holder at once.

Every field the guard refuses is counted (``tidings_subset_stale_fields``) and, inside a
:class:`tidings.listener.StaleNote` block, noted: the listener runtime opens one around each
handler call to tell an event that changed nothing because it was stale from one that was
applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import BigInteger, Column, Index, String, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db import metadata
from tidings.events.model import MAX_ENTITY_VERSION
from tidings.listener.stale import note_fields
from tidings.metrics import STALE_FIELDS

__all__ = ["MEMBERSHIP", "VersionGuard", "apply_changes", "subset_versions_table"]

MEMBERSHIP = "_membership"
"""The pseudo-field that guards "added"/"removed" events of a copy (see the module doc)."""

subset_versions_table = Table(
    "tidings_subset_versions",
    metadata,
    Column("subset", String(100), primary_key=True),
    Column("source_id", String(200), primary_key=True),
    Column("holder_id", String(200), primary_key=True),
    Column("field", String(100), primary_key=True),
    Column("version", BigInteger, nullable=False),
)
Index(
    "ix_tidings_subset_versions_holder",
    subset_versions_table.c.subset,
    subset_versions_table.c.holder_id,
)

_t = subset_versions_table


def apply_changes(
    current: Mapping[str, Any], changes: Mapping[str, Any], fresh: Iterable[str]
) -> dict[str, Any]:
    """A copy of ``current`` with the fields of ``changes`` that are in ``fresh`` applied;
    the stale ones are left as they are. Neither argument is modified."""
    allowed = set(fresh)
    return {**current, **{k: v for k, v in changes.items() if k in allowed}}


class VersionGuard:
    """Per-field versions of the copies one subset keeps (``subset`` names it, e.g.
    ``"tenure.householdMembers"``). Every method runs in the caller's session and
    transaction; none commits."""

    def __init__(self, subset: str) -> None:
        if not subset or len(subset) > 100:
            raise ValueError("subset: expected a name of 1 to 100 characters")
        self.subset = subset

    async def fresh(
        self,
        session: AsyncSession,
        *,
        source_id: str,
        holder_id: str,
        version: int,
        fields: Iterable[str],
    ) -> set[str]:
        """The fields of ``fields`` that an event at ``version`` may write: those with no
        stored version or a stored version <= ``version`` (an equal version is a
        redelivery, or a full re-read of the source that may repair a drifted copy). Their
        stored version becomes ``version``; a stored version is never lowered.

        One statement decides and records: an upsert whose conflict clause updates only
        where the stored version is not newer, returning the rows it wrote. On PostgreSQL
        the written rows stay locked until the transaction ends, so a concurrent
        transaction with the same copy waits and then decides against the committed
        versions; on SQLite every transaction already holds the write lock.
        """
        if isinstance(version, bool) or not 0 <= version <= MAX_ENTITY_VERSION:
            raise ValueError(f"version: expected 0..{MAX_ENTITY_VERSION}, got {version!r}")
        # Sorted: a fixed lock order, so two transactions never deadlock on the same copy.
        names = sorted(set(fields))
        if not names:
            return set()
        rows = [
            {
                "subset": self.subset,
                "source_id": source_id,
                "holder_id": holder_id,
                "field": name,
                "version": version,
            }
            for name in names
        ]
        if session.get_bind().dialect.name == "postgresql":
            insert: Any = postgresql.insert(_t)
        else:
            insert = sqlite.insert(_t)
        insert = insert.values(rows)
        statement = insert.on_conflict_do_update(
            index_elements=[_t.c.subset, _t.c.source_id, _t.c.holder_id, _t.c.field],
            set_={"version": insert.excluded.version},
            where=_t.c.version <= insert.excluded.version,
        ).returning(_t.c.field)
        result = await session.execute(statement)
        fresh = set(result.scalars().all())
        stale = set(names) - fresh
        if stale:
            STALE_FIELDS.labels(self.subset).inc(len(stale))
        note_fields(fresh, stale)
        return fresh

    async def versions(
        self, session: AsyncSession, *, source_id: str, holder_id: str
    ) -> dict[str, int]:
        """The stored version of every guarded field of one copy (empty when none)."""
        result = await session.execute(
            select(_t.c.field, _t.c.version).where(
                _t.c.subset == self.subset,
                _t.c.source_id == source_id,
                _t.c.holder_id == holder_id,
            )
        )
        return {field: int(version) for field, version in result}

    async def forget(
        self, session: AsyncSession, *, holder_id: str, source_id: str | None = None
    ) -> int:
        """Drop the versions of ``holder_id``'s copies (only of ``source_id``'s when given),
        for when the holder record is deleted. Returns how many rows went.

        Not for removals of a member: those rows are the tombstone that stops an older
        "added" event from bringing the member back.
        """
        statement = delete(_t).where(_t.c.subset == self.subset, _t.c.holder_id == holder_id)
        if source_id is not None:
            statement = statement.where(_t.c.source_id == source_id)
        result = await session.execute(statement)
        return int(result.rowcount)  # type: ignore[attr-defined]
