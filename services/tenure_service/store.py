"""Reads and writes of tenures; every write commits its event in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from housing_contracts import TENURE_TOPIC
from tenure_service.model import MemberFields, TenureCreate, TenureOut, check_dates, is_active
from tenure_service.tables import household_members, tenures
from tidings.db import session_factory
from tidings.events import Event, EventData, User, utc_now
from tidings.outbox import Outbox

SOURCE = {"source_domain": "Tenure", "source_system": "TenureAPI"}
TENURE_FIELDS = {
    "payment_reference": "paymentReference",
    "start_of_tenure_date": "startOfTenureDate",
    "end_of_tenure_date": "endOfTenureDate",
    "tenure_type": "tenureType",
    "tenured_asset": "tenuredAsset",
}
MEMBER_FIELDS = {
    "person_id": "id",
    "type": "type",
    "full_name": "fullName",
    "date_of_birth": "dateOfBirth",
    "is_responsible": "isResponsible",
    "person_tenure_type": "personTenureType",
}
IfMatch = Callable[[int], None]


class NotFound(Exception):
    """The tenure (or the member) does not exist."""


class TenureStore:
    def __init__(self, engine: AsyncEngine, outbox: Outbox) -> None:
        self.sessions = session_factory(engine)
        self.readers = session_factory(engine, read_only=True)
        self.outbox = outbox

    async def create(self, body: TenureCreate, *, user: User, correlation_id: str) -> str:
        tenure_id = str(uuid.uuid4())
        now = utc_now()
        values = body.model_dump(exclude={"household_members"}, by_alias=False)
        row = {**values, "id": tenure_id, "version_number": 1, "created_at": now, "updated_at": now}
        row["tenure_type"] = (
            body.tenure_type.model_dump(by_alias=True) if body.tenure_type else None
        )
        row["tenured_asset"] = (
            body.tenured_asset.model_dump(by_alias=True) if body.tenured_asset else None
        )
        members = [
            {
                "tenure_id": tenure_id,
                "person_id": m.id,
                "position": i,
                **m.model_dump(exclude={"id"}, by_alias=False),
            }
            for i, m in enumerate(body.household_members)
        ]
        async with self.sessions() as session, session.begin():
            await session.execute(insert(tenures).values(row))
            if members:
                await session.execute(insert(household_members).values(members))
            data = _wire(row, members)
            await self._publish(
                session, "TenureCreatedEvent", tenure_id, 1, user, correlation_id, None, data
            )
        return tenure_id

    async def get(self, tenure_id: str) -> TenureOut | None:
        async with self.readers() as session:
            loaded = await _load(session, tenure_id)
        if loaded is None:
            return None
        row, members = loaded
        return TenureOut.model_validate(
            {
                **_wire(row, members),
                "isActive": is_active(row["end_of_tenure_date"]),
                "versionNumber": row["version_number"],
            }
        )

    async def patch(
        self,
        tenure_id: str,
        changes: dict[str, Any],
        *,
        if_match: IfMatch,
        user: User,
        correlation_id: str,
    ) -> int:
        async with self.sessions() as session, session.begin():
            row, members = await _locked(session, tenure_id)
            if_match(row["version_number"])
            proposed = {**row, **changes}
            check_dates(proposed["start_of_tenure_date"], proposed["end_of_tenure_date"])
            before, after = _wire(row, members), _wire(proposed, members)
            changed = [k for k in TENURE_FIELDS.values() if after[k] != before[k]]
            if not changed:
                return int(row["version_number"])
            version = int(row["version_number"]) + 1
            await session.execute(
                update(tenures)
                .where(tenures.c.id == tenure_id)
                .values(**changes, version_number=version, updated_at=utc_now())
            )
            await self._publish(
                session,
                "TenureUpdatedEvent",
                tenure_id,
                version,
                user,
                correlation_id,
                {k: before[k] for k in changed},
                {k: after[k] for k in changed},
            )
            return version

    async def upsert_member(
        self,
        tenure_id: str,
        person_id: str,
        body: MemberFields,
        *,
        if_match: IfMatch,
        user: User,
        correlation_id: str,
    ) -> int:
        async with self.sessions() as session, session.begin():
            row, members = await _locked(session, tenure_id)
            if_match(row["version_number"])
            fields = body.model_dump(by_alias=False)
            existing = next((m for m in members if m["person_id"] == person_id), None)
            if existing is not None and all(existing[k] == v for k, v in fields.items()):
                return int(row["version_number"])
            if existing is None:
                position = max((m["position"] for m in members), default=-1) + 1
                new = {
                    "tenure_id": tenure_id,
                    "person_id": person_id,
                    "position": position,
                    **fields,
                }
                await session.execute(insert(household_members).values(new))
                after = [*members, new]
            else:
                await session.execute(
                    update(household_members)
                    .where(
                        household_members.c.tenure_id == tenure_id,
                        household_members.c.person_id == person_id,
                    )
                    .values(fields)
                )
                after = [{**m, **fields} if m is existing else m for m in members]
            return await self._members_changed(
                session, row, "PersonAddedToTenureEvent", members, after, user, correlation_id
            )

    async def remove_member(
        self,
        tenure_id: str,
        person_id: str,
        *,
        if_match: IfMatch,
        user: User,
        correlation_id: str,
    ) -> int:
        async with self.sessions() as session, session.begin():
            row, members = await _locked(session, tenure_id)
            if_match(row["version_number"])
            if not any(m["person_id"] == person_id for m in members):
                raise NotFound(f"person {person_id} is not a member of tenure {tenure_id}")
            await session.execute(
                delete(household_members).where(
                    household_members.c.tenure_id == tenure_id,
                    household_members.c.person_id == person_id,
                )
            )
            after = [m for m in members if m["person_id"] != person_id]
            return await self._members_changed(
                session,
                row,
                "PersonRemovedFromTenureEvent",
                members,
                after,
                user,
                correlation_id,
            )

    async def _members_changed(
        self,
        session: AsyncSession,
        row: dict[str, Any],
        event_type: str,
        before: list[dict[str, Any]],
        after: list[dict[str, Any]],
        user: User,
        correlation_id: str,
    ) -> int:
        version = int(row["version_number"]) + 1
        await session.execute(
            update(tenures)
            .where(tenures.c.id == row["id"])
            .values(version_number=version, updated_at=utc_now())
        )
        await self._publish(
            session,
            event_type,
            row["id"],
            version,
            user,
            correlation_id,
            {"householdMembers": [_member(m) for m in before]},
            {"householdMembers": [_member(m) for m in after]},
        )
        return version

    async def _publish(
        self,
        session: AsyncSession,
        event_type: str,
        tenure_id: str,
        version: int,
        user: User,
        correlation_id: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
    ) -> None:
        event = Event(
            event_type=event_type,
            **SOURCE,
            correlation_id=correlation_id,
            user=user,
            entity_id=tenure_id,
            entity_version=version,
            event_data=EventData(old_data=old, new_data=new),
        )
        await self.outbox.add(session, TENURE_TOPIC, event)


async def _load(
    session: AsyncSession, tenure_id: str, *, lock: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    query = select(tenures).where(tenures.c.id == tenure_id)
    row = (await session.execute(query.with_for_update() if lock else query)).mappings().first()
    if row is None:
        return None
    members = (
        (
            await session.execute(
                select(household_members)
                .where(household_members.c.tenure_id == tenure_id)
                .order_by(household_members.c.position)
            )
        )
        .mappings()
        .all()
    )
    return dict(row), [dict(m) for m in members]


async def _locked(
    session: AsyncSession, tenure_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    loaded = await _load(session, tenure_id, lock=True)
    if loaded is None:
        raise NotFound(f"no tenure with id {tenure_id}")
    return loaded


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _member(row: dict[str, Any]) -> dict[str, Any]:
    return {wire: _json(row[col]) for col, wire in MEMBER_FIELDS.items()}


def _wire(row: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """The tenure as events carry it (camelCase JSON values)."""
    data = {"id": row["id"], **{w: _json(row[c]) for c, w in TENURE_FIELDS.items()}}
    data["householdMembers"] = [_member(m) for m in members]
    return data
