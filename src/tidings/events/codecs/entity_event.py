"""The ``entity-event`` codec: the council's flat ``EntityEventSns`` envelope."""

from __future__ import annotations

from typing import Any

from tidings.events.codecs._json import _event_data, _expected, _format_time, _JsonCodec
from tidings.events.model import Event

__all__ = ["EntityEventCodec"]

_ENTITY_KEYS = tuple(field.alias or name for name, field in Event.model_fields.items())
_ENTITY_OPTIONAL = frozenset({"causationId", "user", "entityVersion"})
_ENTITY_REQUIRED = tuple(key for key in _ENTITY_KEYS if key not in _ENTITY_OPTIONAL)


class EntityEventCodec(_JsonCodec):
    """The council's ``EntityEventSns`` envelope: flat camelCase JSON.

    Keys in the order of the council's ``EntityEventSns`` properties: ``id``, ``eventType``,
    ``sourceDomain``, ``sourceSystem``, ``version``, ``correlationId``, ``dateTime`` (7
    fractional digits and ``Z``, as .NET writes a UTC ``DateTime``), ``user`` (``null`` when
    there is none), ``entityId``, ``eventData`` {``oldData``, ``newData``}; ``causationId`` and
    ``entityVersion`` follow ``correlationId`` and ``entityId`` when not ``None``, so an event
    without them is byte-compatible with the council's.

    Decoding ignores unknown keys, at the top level and inside ``user`` and ``eventData``, as
    the .NET serializers the council's listeners use do by default. ``user``, ``causationId``,
    ``entityVersion``, ``oldData`` and ``newData`` may be absent or ``null``; every other field
    is required. ``entityVersion`` must be a JSON integer.
    """

    name = "entity-event"
    content_type = "application/json"

    def to_dict(self, event: Event) -> dict[str, Any]:
        """The entity-event envelope of ``event`` as a JSON-ready dict."""
        wire: dict[str, Any] = {
            "id": str(event.id),
            "eventType": event.event_type,
            "sourceDomain": event.source_domain,
            "sourceSystem": event.source_system,
            "version": event.version,
            "correlationId": event.correlation_id,
        }
        if event.causation_id is not None:
            wire["causationId"] = event.causation_id
        wire["dateTime"] = _format_time(event.date_time, digits=7)
        user = event.user
        wire["user"] = None if user is None else {"name": user.name, "email": user.email}
        wire["entityId"] = event.entity_id
        if event.entity_version is not None:
            wire["entityVersion"] = event.entity_version
        wire["eventData"] = _event_data(event)
        return wire

    def from_dict(self, obj: dict[str, Any]) -> Event:
        """The event in an entity-event envelope already parsed from JSON; raises DecodeError."""
        self._require(obj, *_ENTITY_REQUIRED)
        if not isinstance(obj["eventData"], dict):
            self._fail("eventData", _expected("an object", obj["eventData"]))
        fields = {key: obj[key] for key in _ENTITY_KEYS if key in obj}
        fields["entityVersion"] = self._version_number("entityVersion", obj.get("entityVersion"))
        fields["dateTime"] = self._time(obj, "dateTime")
        if obj.get("user") is not None:
            fields["user"] = self._object(obj, "user", ("name", "email"))
        fields["eventData"] = self._object(obj, "eventData", ("oldData", "newData"))
        return self._event(fields)
