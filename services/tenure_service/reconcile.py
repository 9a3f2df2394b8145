"""The ``tenure-household-members`` subset: each tenure's copy of its members' person fields
(``fullName``, ``dateOfBirth``), reconciled with the Person API.

The named tenant of an ended tenure keeps the name that was on the tenure (the listener's
rule), so that name is not compared. A member whose person is gone from the Person API is
reported as orphaned and kept: membership is the tenure's own fact, which only the Tenure
API changes, and the listener too leaves such a member as it is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenure_service.listener import COPIED, GUARD
from tenure_service.model import is_active
from tenure_service.tables import household_members, tenures
from tidings.subsets import SourceRecord
from tidings.subsets.reconcile import Copy, stored_versions

__all__ = ["HouseholdMembers"]

_hm = household_members


class HouseholdMembers:
    """Copies in the Tenure database of Person records (see the module doc)."""

    name = "tenure-household-members"
    domain = "tenure"
    source = "person"

    def path(self, source_id: str) -> str:
        return f"/api/v1/persons/{quote(source_id, safe='')}"

    async def count(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(_hm)) or 0)

    async def sources(self, session: AsyncSession) -> list[str]:
        rows = await session.execute(select(_hm.c.person_id).distinct().order_by(_hm.c.person_id))
        return list(rows.scalars())

    async def copies(self, session: AsyncSession, source_id: str) -> list[Copy]:
        rows = await session.execute(
            select(
                _hm.c.tenure_id,
                _hm.c.full_name,
                _hm.c.date_of_birth,
                _hm.c.is_responsible,
                tenures.c.end_of_tenure_date,
            )
            .join(tenures, tenures.c.id == _hm.c.tenure_id)
            .where(_hm.c.person_id == source_id)
            .order_by(_hm.c.tenure_id)
        )
        versions = await stored_versions(session, GUARD, source_id)
        copies = []
        for row in rows:
            values: dict[str, Any] = {
                "fullName": row.full_name,
                "dateOfBirth": _iso(row.date_of_birth),
            }
            if _name_frozen(row.is_responsible, row.end_of_tenure_date):
                del values["fullName"]
            copies.append(Copy(source_id, row.tenure_id, values, versions.get(row.tenure_id, {})))
        return copies

    def expected(self, copy: Copy, record: SourceRecord) -> Mapping[str, Any] | None:
        return {name: record.data.get(name) for name in copy.values}

    async def fix(
        self,
        session: AsyncSession,
        copy: Copy,
        expected: Mapping[str, Any],
        fields: Collection[str],
        version: int,
    ) -> set[str]:
        # The holder locked before the guard decides (see tidings.subsets.guard).
        await session.execute(
            select(tenures.c.id).where(tenures.c.id == copy.holder_id).with_for_update()
        )
        row = (
            await session.execute(
                select(_hm.c.is_responsible, tenures.c.end_of_tenure_date)
                .join(tenures, tenures.c.id == _hm.c.tenure_id)
                .where(_hm.c.tenure_id == copy.holder_id, _hm.c.person_id == copy.source_id)
            )
        ).first()
        if row is None:
            return set()
        allowed = set(fields)
        if _name_frozen(row.is_responsible, row.end_of_tenure_date):
            allowed.discard("fullName")
        fresh = await GUARD.fresh(
            session,
            source_id=copy.source_id,
            holder_id=copy.holder_id,
            version=version,
            fields=allowed,
        )
        if fresh:
            await session.execute(
                update(_hm)
                .where(_hm.c.tenure_id == copy.holder_id, _hm.c.person_id == copy.source_id)
                .values({COPIED[f]: _column(f, expected[f]) for f in fresh})
            )
        return fresh

    async def remove(self, session: AsyncSession, copy: Copy, version: int | None) -> bool:
        return False


def _name_frozen(is_responsible: bool, end: date | None) -> bool:
    return bool(is_responsible) and not is_active(end)


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _column(name: str, value: Any) -> Any:
    if name == "dateOfBirth" and isinstance(value, str):
        return date.fromisoformat(value)
    return value
