"""The ``person-tenures`` subset: each person's summary of every tenure they belong to,
reconciled with the Tenure API.

The summary fields are compared one by one (``assetId``, ``startDate``, ...); the guard
keeps versions per tenure field (``tenuredAsset`` feeds four summary fields), so a fix
writes every summary field of a tenure field the guard lets through. A summary of a tenure
that is gone, or no longer lists the person, is orphaned; a fix removes it as the
person-listener handles a removal: the membership version is recorded (a tombstone that an
older "added" event cannot undo) and the summary row deleted, unless the copy holds a
version newer than the read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from person_service.listener import GUARD, SUMMARY
from person_service.tables import person_tenures, persons
from tidings.subsets import MEMBERSHIP, SourceRecord
from tidings.subsets.reconcile import Copy, stored_versions

__all__ = ["PersonTenures"]

_pt = person_tenures

FIELD_OF = {key: name for name, summarise in SUMMARY.items() for key in summarise(None)}
"""Summary field -> the tenure field it comes from (and is guarded as)."""


class PersonTenures:
    """Copies in the Person database of Tenure records (see the module doc)."""

    name = "person-tenures"
    domain = "person"
    source = "tenure"

    def path(self, source_id: str) -> str:
        return f"/api/v1/tenures/{quote(source_id, safe='')}"

    async def count(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(_pt)) or 0)

    async def sources(self, session: AsyncSession) -> list[str]:
        rows = await session.execute(select(_pt.c.tenure_id).distinct().order_by(_pt.c.tenure_id))
        return list(rows.scalars())

    async def copies(self, session: AsyncSession, source_id: str) -> list[Copy]:
        rows = await session.execute(
            select(_pt.c.person_id, _pt.c.summary)
            .where(_pt.c.tenure_id == source_id)
            .order_by(_pt.c.person_id)
        )
        stored = await stored_versions(session, GUARD, source_id)
        copies = []
        for person_id, summary in rows:
            held = stored.get(person_id, {})
            versions = {key: held[name] for key, name in FIELD_OF.items() if name in held}
            if MEMBERSHIP in held:
                versions[MEMBERSHIP] = held[MEMBERSHIP]
            values = {key: (summary or {}).get(key) for key in FIELD_OF}
            copies.append(Copy(source_id, person_id, values, versions))
        return copies

    def expected(self, copy: Copy, record: SourceRecord) -> Mapping[str, Any] | None:
        members = [m.get("id") for m in record.data.get("householdMembers") or []]
        if copy.holder_id not in members:
            return None
        summary: dict[str, Any] = {}
        for name, summarise in SUMMARY.items():
            summary.update(summarise(record.data.get(name)))
        return summary

    async def fix(
        self,
        session: AsyncSession,
        copy: Copy,
        expected: Mapping[str, Any],
        fields: Collection[str],
        version: int,
    ) -> set[str]:
        await _lock(session, copy.holder_id)
        current = await session.scalar(
            select(_pt.c.summary).where(
                _pt.c.person_id == copy.holder_id, _pt.c.tenure_id == copy.source_id
            )
        )
        if current is None:
            return set()
        fresh = await GUARD.fresh(
            session,
            source_id=copy.source_id,
            holder_id=copy.holder_id,
            version=version,
            fields={FIELD_OF[key] for key in fields},
        )
        if not fresh:
            return set()
        summary = {
            **current,
            **{key: expected[key] for key, name in FIELD_OF.items() if name in fresh},
        }
        await session.execute(
            update(_pt)
            .where(_pt.c.person_id == copy.holder_id, _pt.c.tenure_id == copy.source_id)
            .values(summary=summary)
        )
        return {key for key in fields if FIELD_OF[key] in fresh}

    async def remove(self, session: AsyncSession, copy: Copy, version: int | None) -> bool:
        await _lock(session, copy.holder_id)
        held = await GUARD.versions(session, source_id=copy.source_id, holder_id=copy.holder_id)
        newest = max(held.values(), default=0)
        if version is None:
            version = newest  # the tenure is gone: removed as of the last version seen
        elif newest > version:
            return False  # present after the read: added again
        await GUARD.fresh(
            session,
            source_id=copy.source_id,
            holder_id=copy.holder_id,
            version=version,
            fields=[MEMBERSHIP],
        )
        result = await session.execute(
            delete(_pt).where(_pt.c.person_id == copy.holder_id, _pt.c.tenure_id == copy.source_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def _lock(session: AsyncSession, person_id: str) -> None:
    await session.execute(select(persons.c.id).where(persons.c.id == person_id).with_for_update())
