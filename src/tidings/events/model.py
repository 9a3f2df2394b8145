"""The event: one model for every envelope on the wire.

Field names are snake_case in Python and camelCase on the wire (``event_type`` is
``eventType``), as the council system's ``EntityEventSns`` envelope spells them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = ["MAX_ENTITY_VERSION", "Event", "EventData", "User", "new_event_id", "utc_now"]

MAX_ENTITY_VERSION = 2**63 - 1
"""The largest entity version on the wire: a signed 64-bit integer, as databases hold it."""


def new_event_id() -> uuid.UUID:
    """A fresh random event id."""
    return uuid.uuid4()


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
    )


class User(_Wire):
    """Who made the change, taken from the caller's token."""

    name: str
    email: str


class EventData(_Wire):
    """Before and after. A create carries the whole entity in ``new_data``; an update carries
    only the fields that changed, in both."""

    old_data: dict[str, Any] | None = None
    new_data: dict[str, Any] | None = None


class Event(_Wire):
    """A change to one entity, as its owning domain published it.

    ``entity_version`` is the entity's version number after the change, strictly increasing
    per entity; it is ``None`` only for events from publishers that do not send one, whose
    consumers must re-read the source instead of trusting order.
    """

    id: uuid.UUID = Field(default_factory=new_event_id)
    event_type: str = Field(min_length=1, max_length=200)
    source_domain: str = Field(min_length=1, max_length=200)
    source_system: str = Field(min_length=1, max_length=200)
    version: str = Field(default="v1", min_length=1, max_length=50)
    correlation_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    causation_id: str | None = None
    date_time: datetime = Field(default_factory=utc_now)
    user: User | None = None
    entity_id: str = Field(min_length=1, max_length=200)
    entity_version: int | None = Field(default=None, ge=0, le=MAX_ENTITY_VERSION)
    event_data: EventData = Field(default_factory=EventData)

    @field_validator("date_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("dateTime must carry a timezone")
        return value.astimezone(UTC)

    @property
    def key(self) -> str:
        """The ordering key: events of one entity are delivered in order."""
        return self.entity_id
