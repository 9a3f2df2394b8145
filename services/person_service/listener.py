"""The person-listener: keeps each person's ``tenures[]`` (a summary of every tenure they
belong to) current from tenure events.

Rules: only the summary fields are written, and only for people that exist here (an event
about someone unknown is skipped with a log line; a listener never creates a person).
Every write goes through a per-field version guard, so an older event never overwrites
newer data, whatever the delivery order. A tenure change carries only its changed fields;
a new membership is filled by re-reading the tenure from the Tenure API, as are a change
to a tenure no copy exists of yet (its creation may be in flight on a broker without
per-key order) and events without an ``entityVersion`` (publishers that send none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from housing_contracts import TENURE_TOPIC
from person_service.tables import person_tenures, persons
from tidings.events import Event
from tidings.listener import Listener, Retry
from tidings.subsets import MEMBERSHIP, SourceClient, SourceUnavailable, VersionGuard
from tidings.topology import Subscription

log = logging.getLogger("person_service.listener")

SUBSCRIPTION = Subscription(
    name="person-listener",
    topics=(TENURE_TOPIC,),
    event_types=(
        "TenureCreatedEvent",
        "TenureUpdatedEvent",
        "PersonAddedToTenureEvent",
        "PersonRemovedFromTenureEvent",
    ),
)

GUARD = VersionGuard("person.tenures")


def _asset(value: Any) -> dict[str, Any]:
    asset = value or {}
    return {
        "assetFullAddress": asset.get("fullAddress"),
        "assetId": asset.get("id"),
        "uprn": asset.get("uprn"),
        "propertyReference": asset.get("propertyReference"),
    }


SUMMARY: dict[str, Callable[[Any], dict[str, Any]]] = {
    "tenureType": lambda v: {"type": (v or {}).get("description")},
    "startOfTenureDate": lambda v: {"startDate": v},
    "endOfTenureDate": lambda v: {"endDate": v},
    "tenuredAsset": _asset,
    "paymentReference": lambda v: {"paymentReference": v},
}
"""Tenure field -> the summary fields it feeds."""


def build_listener(tenures: SourceClient, *, reread: bool = False) -> Listener:
    """``reread=True`` keeps the subset from thin events: every tenure change re-reads the
    tenure from the Tenure API instead of trusting the event's data."""
    listener = Listener(SUBSCRIPTION.name)

    @listener.on("TenureCreatedEvent")
    async def tenure_created(event: Event, session: AsyncSession) -> None:
        data = event.event_data.new_data or {}
        if event.entity_version is None:
            await _resync(event, session, tenures)
            return
        for member in data.get("householdMembers", []):
            await _add(
                session,
                member["id"],
                event.entity_id,
                event.entity_version,
                data,
                event.entity_version,
            )

    @listener.on("PersonAddedToTenureEvent")
    async def member_added(event: Event, session: AsyncSession) -> None:
        if event.entity_version is None:
            await _resync(event, session, tenures)
            return
        before = _member_ids(event.event_data.old_data)
        added = [m for m in _member_ids(event.event_data.new_data) if m not in before]
        if not added:
            return
        tenure = await _fetch(tenures, event)
        if tenure is None:
            return
        snapshot, version = tenure
        for person_id in added:
            await _add(session, person_id, event.entity_id, event.entity_version, snapshot, version)

    @listener.on("PersonRemovedFromTenureEvent")
    async def member_removed(event: Event, session: AsyncSession) -> None:
        if event.entity_version is None:
            await _resync(event, session, tenures)
            return
        after = _member_ids(event.event_data.new_data)
        for person_id in _member_ids(event.event_data.old_data):
            if person_id not in after:
                await _remove(session, person_id, event.entity_id, event.entity_version)

    @listener.on("TenureUpdatedEvent")
    async def tenure_updated(event: Event, session: AsyncSession) -> None:
        if reread or event.entity_version is None:
            await _resync(event, session, tenures)
            return
        changes = {k: v for k, v in (event.event_data.new_data or {}).items() if k in SUMMARY}
        if not changes:
            return
        holders = await _holders(session, event.entity_id)
        if not holders:
            # No copy yet: the tenure's creation may still be on its way (brokers without
            # per-key order deliver both at once). The source knows who its members are.
            await _resync(event, session, tenures)
            return
        for person_id in holders:
            await _apply(session, person_id, event.entity_id, event.entity_version, changes)

    return listener


def _member_ids(data: dict[str, Any] | None) -> list[str]:
    return [m["id"] for m in (data or {}).get("householdMembers", [])]


async def _holders(session: AsyncSession, tenure_id: str) -> list[str]:
    rows = await session.execute(
        select(person_tenures.c.person_id).where(person_tenures.c.tenure_id == tenure_id)
    )
    return list(rows.scalars())


async def _fetch(tenures: SourceClient, event: Event) -> tuple[dict[str, Any], int] | None:
    try:
        record = await tenures.fetch(
            f"/api/v1/tenures/{event.entity_id}", correlation_id=event.correlation_id
        )
    except SourceUnavailable as exc:
        raise Retry(f"Tenure API unavailable: {exc}") from exc
    if record is None or record.version is None:
        log.info("tenure %s not found at its source; skipped", event.entity_id)
        return None
    return record.data, record.version


async def _add(
    session: AsyncSession,
    person_id: str,
    tenure_id: str,
    membership_version: int,
    snapshot: dict[str, Any],
    snapshot_version: int,
) -> None:
    exists = await session.scalar(select(persons.c.id).where(persons.c.id == person_id))
    if exists is None:
        log.info("person %s is not known here; tenure %s skipped", person_id, tenure_id)
        return
    fresh = await GUARD.fresh(
        session,
        source_id=tenure_id,
        holder_id=person_id,
        version=membership_version,
        fields=[MEMBERSHIP],
    )
    if MEMBERSHIP not in fresh:
        return
    await _apply(
        session, person_id, tenure_id, snapshot_version, {k: snapshot.get(k) for k in SUMMARY}
    )


async def _apply(
    session: AsyncSession,
    person_id: str,
    tenure_id: str,
    version: int,
    changes: dict[str, Any],
) -> None:
    fresh = await GUARD.fresh(
        session, source_id=tenure_id, holder_id=person_id, version=version, fields=changes
    )
    if not fresh:
        return
    current = await session.scalar(
        select(person_tenures.c.summary).where(
            person_tenures.c.person_id == person_id, person_tenures.c.tenure_id == tenure_id
        )
    )
    summary = dict(current or {"id": tenure_id})
    for field in fresh:
        summary.update(SUMMARY[field](changes[field]))
    if current is None:
        await session.execute(
            insert(person_tenures).values(person_id=person_id, tenure_id=tenure_id, summary=summary)
        )
    else:
        await session.execute(
            update(person_tenures)
            .where(person_tenures.c.person_id == person_id, person_tenures.c.tenure_id == tenure_id)
            .values(summary=summary)
        )


async def _remove(session: AsyncSession, person_id: str, tenure_id: str, version: int) -> None:
    fresh = await GUARD.fresh(
        session, source_id=tenure_id, holder_id=person_id, version=version, fields=[MEMBERSHIP]
    )
    if MEMBERSHIP in fresh:
        await session.execute(
            delete(person_tenures).where(
                person_tenures.c.person_id == person_id, person_tenures.c.tenure_id == tenure_id
            )
        )


async def _resync(event: Event, session: AsyncSession, tenures: SourceClient) -> None:
    """Rebuild every copy of one tenure from its source (events without a version)."""
    tenure = await _fetch(tenures, event)
    if tenure is None:
        return
    snapshot, version = tenure
    members = _member_ids(snapshot)
    for person_id in members:
        await _add(session, person_id, event.entity_id, version, snapshot, version)
    for person_id in await _holders(session, event.entity_id):
        if person_id not in members:
            await _remove(session, person_id, event.entity_id, version)
