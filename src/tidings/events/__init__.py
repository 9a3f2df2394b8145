"""The event contract: model, catalog, codecs and schema export. Imports nothing of ours
but :mod:`tidings.errors`."""

from tidings.events.catalog import EventCatalog, EventSpec, ParsedData
from tidings.events.codecs import (
    CODECS,
    MAX_ENTITY_VERSION,
    MAX_EVENT_BYTES,
    CloudEventsCodec,
    Codec,
    EntityEventCodec,
    decode,
    detect,
    encode,
    get_codec,
    schema_uri,
)
from tidings.events.model import Event, EventData, User, new_event_id, utc_now

__all__ = [
    "CODECS",
    "MAX_ENTITY_VERSION",
    "MAX_EVENT_BYTES",
    "CloudEventsCodec",
    "Codec",
    "EntityEventCodec",
    "Event",
    "EventCatalog",
    "EventData",
    "EventSpec",
    "ParsedData",
    "User",
    "decode",
    "detect",
    "encode",
    "get_codec",
    "new_event_id",
    "schema_uri",
    "utc_now",
]
