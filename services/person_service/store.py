"""Reads and writes of person records; every write commits its event in the same
transaction (the outbox)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from housing_contracts import PERSON_TOPIC
from person_service.model import WIRE_FIELDS, PersonCreate, PersonOut, TenureSummary, event_fields
from person_service.tables import person_tenures, persons
from tidings.db import session_factory
from tidings.events import Event, EventData, User, utc_now
from tidings.outbox import Outbox

SOURCE = {"source_domain": "Person", "source_system": "PersonAPI"}


class PersonStore:
    def __init__(self, engine: AsyncEngine, outbox: Outbox) -> None:
        self.sessions = session_factory(engine)
        self.readers = session_factory(engine, read_only=True)
        self.outbox = outbox

    async def create(self, body: PersonCreate, *, user: User, correlation_id: str) -> str:
        person_id = str(uuid.uuid4())
        now = utc_now()
        row = {
            "id": person_id,
            **{col: _plain(getattr(body, col)) for col in WIRE_FIELDS},
            "version_number": 1,
            "created_at": now,
            "updated_at": now,
        }
        async with self.sessions() as session, session.begin():
            await session.execute(insert(persons).values(row))
            event = Event(
                event_type="PersonCreatedEvent",
                **SOURCE,
                correlation_id=correlation_id,
                user=user,
                entity_id=person_id,
                entity_version=1,
                event_data=EventData(new_data={"id": person_id, **event_fields(row)}),
            )
            await self.outbox.add(session, PERSON_TOPIC, event)
        return person_id

    async def get(self, person_id: str) -> PersonOut | None:
        async with self.readers() as session:
            row = (
                (await session.execute(select(persons).where(persons.c.id == person_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            summaries = (
                (
                    await session.execute(
                        select(person_tenures.c.summary)
                        .where(person_tenures.c.person_id == person_id)
                        .order_by(person_tenures.c.tenure_id)
                    )
                )
                .scalars()
                .all()
            )
        data = event_fields(dict(row))
        return PersonOut.model_validate(
            {
                **data,
                "id": person_id,
                "tenures": [_with_is_active(s) for s in summaries],
                "versionNumber": row["version_number"],
            }
        )

    async def patch(
        self,
        person_id: str,
        changes: dict[str, Any],
        *,
        if_match: Any,
        user: User,
        correlation_id: str,
    ) -> int | None:
        """Apply the columns in ``changes``; return the version after (None: no person).
        ``if_match(version)`` raises when the caller's version is stale. A patch that
        changes nothing publishes nothing and keeps the version."""
        async with self.sessions() as session, session.begin():
            row = (
                (
                    await session.execute(
                        select(persons).where(persons.c.id == person_id).with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            current = dict(row)
            if_match(current["version_number"])
            proposed = {**current, **{k: _plain(v) for k, v in changes.items()}}
            before, after = event_fields(current), event_fields(proposed)
            changed = [k for k in after if after[k] != before[k]]
            if not changed:
                return int(current["version_number"])
            version = int(current["version_number"]) + 1
            await session.execute(
                update(persons)
                .where(persons.c.id == person_id)
                .values(
                    **{k: proposed[k] for k in changes},
                    version_number=version,
                    updated_at=utc_now(),
                )
            )
            event = Event(
                event_type="PersonUpdatedEvent",
                **SOURCE,
                correlation_id=correlation_id,
                user=user,
                entity_id=person_id,
                entity_version=version,
                event_data=EventData(
                    old_data={k: before[k] for k in changed},
                    new_data={k: after[k] for k in changed},
                ),
            )
            await self.outbox.add(session, PERSON_TOPIC, event)
            return version


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, date) or value is None:
        return value
    return str(value)


def _with_is_active(summary: dict[str, Any]) -> dict[str, Any]:
    end = summary.get("endDate")
    active = end is None or date.fromisoformat(end) > date.today()
    return TenureSummary.model_validate({**summary, "isActive": active}).model_dump(by_alias=True)
