"""JSON Schema of one event type version, as the ``entity-event`` codec writes it.

The envelope part is derived from :class:`~tidings.events.model.Event`, so a change to the
model shows in every exported schema; ``eventData.oldData`` and ``eventData.newData`` are
typed by the payload model registered in the catalog. The schema is open (unknown keys are
allowed) because the ``entity-event`` decoder ignores them, as .NET consumers do.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from tidings.events.codecs import MAX_ENTITY_VERSION, schema_uri
from tidings.events.model import Event

if TYPE_CHECKING:
    from tidings.events.catalog import EventSpec

__all__ = ["JSON_SCHEMA_DIALECT", "envelope_schema"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_REQUIRED = [
    "id",
    "eventType",
    "sourceDomain",
    "sourceSystem",
    "version",
    "correlationId",
    "dateTime",
    "entityId",
    "eventData",
]


def envelope_schema(spec: EventSpec) -> dict[str, Any]:
    """The full wire envelope of ``spec``'s event type and version as a JSON Schema (2020-12)."""
    model = Event.model_json_schema(by_alias=True)
    model_defs = model["$defs"]
    properties: dict[str, Any] = {
        name: _untitled(prop) for name, prop in model["properties"].items()
    }
    properties["eventType"] = {"const": spec.event_type}
    properties["entityVersion"]["anyOf"][0]["maximum"] = MAX_ENTITY_VERSION
    properties["version"] = {"const": spec.version}
    if spec.source_domain is not None:
        properties["sourceDomain"] = {"const": spec.source_domain}
    user = _untitled(model_defs["User"])
    user.pop("additionalProperties", None)
    user.pop("description", None)
    properties["user"] = {"anyOf": [user, {"type": "null"}]}

    payload = spec.data.model_json_schema(by_alias=True)
    payload_defs = payload.pop("$defs", {})
    data = {"anyOf": [payload, {"type": "null"}]}
    properties["eventData"] = {
        "type": "object",
        "properties": {"oldData": data, "newData": copy.deepcopy(data)},
    }
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_uri(spec.event_type, spec.version),
        "title": f"{spec.event_type} {spec.version}",
        "description": spec.description or f"The {spec.event_type} {spec.version} event.",
        "type": "object",
        "properties": properties,
        "required": list(_REQUIRED),
    }
    if payload_defs:
        schema["$defs"] = payload_defs
    return schema


def _untitled(schema: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(schema)
    result.pop("title", None)
    for prop in result.get("properties", {}).values():
        prop.pop("title", None)
    return result
