"""The tenure-listener: keeps each household member's ``fullName`` and ``dateOfBirth`` (the
subset of Person data a tenure holds) current.

* ``PersonUpdatedEvent`` carries the changed fields; they are written to every tenure that
  lists the person, through a per-field version guard (an older event never overwrites
  newer data, in any delivery order).
* ``TenureCreatedEvent`` and ``PersonAddedToTenureEvent`` (the tenure's own events) make the
  listener re-read each added person from the Person API, so that a member added with a name
  or date of birth that differs from the person's is corrected.
* An event without ``entityVersion`` (publishers that send none) is handled by re-reading.

Rule kept from the council system: the named tenant (``isResponsible``) of an ended tenure
keeps the name that was on the tenure. A person or tenure unknown here is skipped with a
log line; the listener never creates one.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from housing_contracts import PERSON_TOPIC, TENURE_TOPIC
from tenure_service.model import is_active
from tenure_service.tables import household_members, tenures
from tidings.events import Event
from tidings.listener import Listener, Retry
from tidings.subsets import SourceClient, SourceUnavailable, VersionGuard
from tidings.topology import Subscription

log = logging.getLogger("tenure_service.listener")

SUBSCRIPTION = Subscription(
    name="tenure-listener",
    topics=(PERSON_TOPIC, TENURE_TOPIC),
    event_types=("PersonUpdatedEvent", "TenureCreatedEvent", "PersonAddedToTenureEvent"),
)

GUARD = VersionGuard("tenure.householdMembers")
COPIED = {"fullName": "full_name", "dateOfBirth": "date_of_birth"}
"""Person field -> household member column."""


def build_listener(people: SourceClient, *, reread: bool = False) -> Listener:
    """``reread=True`` keeps the subset from thin events: every person event re-reads the
    person from the Person API instead of trusting the event's data."""
    listener = Listener(SUBSCRIPTION.name)

    @listener.on("PersonUpdatedEvent")
    async def person_updated(event: Event, session: AsyncSession) -> None:
        if reread or event.entity_version is None:
            await _reread(session, people, event, event.entity_id, tenure_id=None)
            return
        changes = {k: v for k, v in (event.event_data.new_data or {}).items() if k in COPIED}
        if changes:
            await _copy(session, event.entity_id, event.entity_version, changes, tenure_id=None)

    @listener.on("TenureCreatedEvent", "PersonAddedToTenureEvent")
    async def members_added(event: Event, session: AsyncSession) -> None:
        before = {m["id"]: m for m in (event.event_data.old_data or {}).get("householdMembers", [])}
        for member in (event.event_data.new_data or {}).get("householdMembers", []):
            if before.get(member["id"]) != member:
                await _reread(session, people, event, member["id"], tenure_id=event.entity_id)

    return listener


async def _reread(
    session: AsyncSession,
    people: SourceClient,
    event: Event,
    person_id: str,
    tenure_id: str | None,
) -> None:
    try:
        record = await people.fetch(
            f"/api/v1/persons/{person_id}", correlation_id=event.correlation_id
        )
    except SourceUnavailable as exc:
        raise Retry(f"Person API unavailable: {exc}") from exc
    if record is None or record.version is None:
        log.info("person %s not found at its source; skipped", person_id)
        return
    snapshot = {k: record.data.get(k) for k in COPIED}
    await _copy(session, person_id, record.version, snapshot, tenure_id=tenure_id)


async def _copy(
    session: AsyncSession,
    person_id: str,
    version: int,
    changes: dict[str, Any],
    tenure_id: str | None,
) -> None:
    """Write ``changes`` to the person's membership rows (of one tenure, or of all)."""
    query = (
        select(
            household_members.c.tenure_id,
            household_members.c.is_responsible,
            tenures.c.end_of_tenure_date,
        )
        .join(tenures, tenures.c.id == household_members.c.tenure_id)
        .where(household_members.c.person_id == person_id)
    )
    if tenure_id is not None:
        query = query.where(household_members.c.tenure_id == tenure_id)
    rows = (await session.execute(query)).all()
    if not rows:
        log.info("person %s is in no tenure here; skipped", person_id)
    for row in rows:
        fields = dict(changes)
        if row.is_responsible and not is_active(row.end_of_tenure_date):
            fields.pop("fullName", None)
        fresh = await GUARD.fresh(
            session,
            source_id=person_id,
            holder_id=row.tenure_id,
            version=version,
            fields=fields,
        )
        if fresh:
            await session.execute(
                update(household_members)
                .where(
                    household_members.c.tenure_id == row.tenure_id,
                    household_members.c.person_id == person_id,
                )
                .values({COPIED[f]: _column_value(f, fields[f]) for f in fresh})
            )


def _column_value(field: str, value: Any) -> Any:
    if field == "dateOfBirth" and isinstance(value, str):
        return date.fromisoformat(value)
    return value
