"""The ``cloudevents`` codec: CloudEvents 1.0 JSON in structured mode."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

from tidings.events.codecs._json import (
    _event_data,
    _expected,
    _format_time,
    _is_json_media_type,
    _JsonCodec,
    _short,
)
from tidings.events.model import Event

__all__ = ["CloudEventsCodec", "schema_uri"]


def schema_uri(event_type: str, version: str) -> str:
    """The URI naming the schema of one event type version (CloudEvents ``dataschema``)."""
    return f"urn:tidings:schema:{event_type}:{version}"


class CloudEventsCodec(_JsonCodec):
    """CloudEvents 1.0, JSON structured mode.

    ``source`` is ``/{sourceDomain}/{sourceSystem}`` (segments percent-encoded), ``subject``
    the entity id, ``dataschema`` the :func:`schema_uri`, ``data``
    ``{"oldData", "newData"}``; the other fields are extension attributes (``sourcedomain``,
    ``sourcesystem``, ``version``, ``correlationid``, ``causationid``, ``entityversion``,
    ``username``, ``useremail``), the optional ones omitted when ``None``.

    Decoding takes events of other producers too: missing ``sourcedomain``/``sourcesystem``
    come from ``source``, a missing ``version`` from a tidings ``dataschema`` or else ``"v1"``,
    a missing ``correlationid`` is the event id (decoding stays deterministic), and
    ``entityversion`` may be a decimal string (as binary mode carries it). ``time`` and
    ``subject`` are required, unknown extensions are ignored, and ``data`` must be absent,
    ``null`` or an object with no keys but ``oldData`` and ``newData``.
    """

    name = "cloudevents"
    content_type = "application/cloudevents+json"
    _names = MappingProxyType(
        {
            "eventType": "type",
            "sourceDomain": "sourcedomain",
            "sourceSystem": "sourcesystem",
            "correlationId": "correlationid",
            "causationId": "causationid",
            "dateTime": "time",
            "user.name": "username",
            "user.email": "useremail",
            "entityId": "subject",
            "entityVersion": "entityversion",
            "eventData": "data",
        }
    )

    def to_dict(self, event: Event) -> dict[str, Any]:
        """The CloudEvent of ``event`` as a JSON-ready dict."""
        source = f"/{quote(event.source_domain, safe='')}/{quote(event.source_system, safe='')}"
        wire: dict[str, Any] = {
            "specversion": "1.0",
            "id": str(event.id),
            "type": event.event_type,
            "source": source,
            "subject": event.entity_id,
            "time": _format_time(event.date_time),
            "datacontenttype": "application/json",
            "dataschema": schema_uri(event.event_type, event.version),
            "sourcedomain": event.source_domain,
            "sourcesystem": event.source_system,
            "version": event.version,
            "correlationid": event.correlation_id,
        }
        if event.causation_id is not None:
            wire["causationid"] = event.causation_id
        if event.entity_version is not None:
            wire["entityversion"] = event.entity_version
        if event.user is not None:
            wire["username"] = event.user.name
            wire["useremail"] = event.user.email
        wire["data"] = _event_data(event)
        return wire

    def from_dict(self, obj: dict[str, Any]) -> Event:
        """The event in a CloudEvent already parsed from JSON; raises DecodeError."""
        if obj.get("specversion") != "1.0":
            self._fail("specversion", _expected("'1.0'", obj.get("specversion")))
        content_type = obj.get("datacontenttype")
        if content_type is not None and not _is_json_media_type(content_type):
            self._fail("datacontenttype", _expected("a JSON media type", content_type))
        if "data_base64" in obj:
            self._fail("data_base64", "binary data is not supported; expected JSON data")
        self._require(obj, "id", "type", "source", "subject", "time")
        data = self._object(obj, "data", ("oldData", "newData"))
        if isinstance(obj.get("data"), dict) and obj["data"].keys() - data.keys():
            self._fail("data", "unexpected key; expected only oldData and newData")
        domain, system = obj.get("sourcedomain"), obj.get("sourcesystem")
        if domain is None or system is None:
            parsed = self._split_source(obj["source"])
            domain = parsed[0] if domain is None else domain
            system = parsed[1] if system is None else system
        name, email = obj.get("username"), obj.get("useremail")
        if (name is None) != (email is None):
            self._fail("useremail" if email is None else "username", "missing")
        correlation_id = obj.get("correlationid")
        fields = {
            "id": obj["id"],
            "eventType": obj["type"],
            "sourceDomain": domain,
            "sourceSystem": system,
            "version": self._version(obj),
            "correlationId": obj["id"] if correlation_id is None else correlation_id,
            "causationId": obj.get("causationid"),
            "dateTime": self._time(obj, "time"),
            "user": None if name is None else {"name": name, "email": email},
            "entityId": obj["subject"],
            "entityVersion": self._entity_version(obj.get("entityversion")),
            "eventData": data,
        }
        return self._event(fields)

    def _split_source(self, source: object) -> tuple[str, str]:
        parts = source.split("/") if isinstance(source, str) else []
        if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
            self._fail(
                "source",
                "expected '/<sourceDomain>/<sourceSystem>' without the sourcedomain and "
                f"sourcesystem extensions, got {_short(source)}",
            )
        return unquote(parts[1]), unquote(parts[2])

    def _version(self, obj: dict[str, Any]) -> object:
        if obj.get("version") is not None:
            return obj["version"]
        schema, prefix = obj.get("dataschema"), schema_uri(str(obj["type"]), "")
        if isinstance(schema, str) and schema.startswith(prefix) and len(schema) > len(prefix):
            return schema[len(prefix) :]
        return "v1"

    def _entity_version(self, value: object) -> int | None:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
            value = int(value)
        return self._version_number("entityversion", value)
