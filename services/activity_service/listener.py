"""The activity-listener: one activity record per event, of every type, on every topic
(types outside the catalog too: the history records what was published)."""

from __future__ import annotations

import uuid

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from activity_service.tables import activities
from housing_contracts import PERSON_TOPIC, TENURE_TOPIC
from tidings.events import Event
from tidings.listener import Listener
from tidings.topology import Subscription

SUBSCRIPTION = Subscription(name="activity-listener", topics=(PERSON_TOPIC, TENURE_TOPIC))


def build_listener() -> Listener:
    listener = Listener(SUBSCRIPTION.name)

    @listener.on_any
    async def record(event: Event, session: AsyncSession) -> None:
        await session.execute(
            insert(activities).values(
                id=str(uuid.uuid4()),
                source_event_id=str(event.id),
                target_id=event.entity_id,
                target_type=event.source_domain.lower(),
                event_type=event.event_type,
                old_data=event.event_data.old_data,
                new_data=event.event_data.new_data,
                author_name=event.user.name if event.user else None,
                author_email=event.user.email if event.user else None,
                created_at=event.date_time,
                correlation_id=event.correlation_id,
            )
        )

    return listener
