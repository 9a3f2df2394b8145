"""Wire codecs: an :class:`~tidings.events.model.Event` as bytes, and back.

``cloudevents`` (the default) writes CloudEvents 1.0 JSON in structured mode, which any
CloudEvents SDK parses. ``entity-event`` writes the council's flat ``EntityEventSns``
envelope for interop with its publishers and listeners.

Promises, for both codecs:

* Encoding is deterministic: compact UTF-8 JSON, envelope keys in a fixed order, payload keys
  in the event's own order. Payloads must be JSON-native (``dict`` with ``str`` keys, ``list``,
  ``str``, ``int``, finite ``float``, ``bool``, ``None``); anything else raises
  :class:`~tidings.errors.EventError` on encode.
* ``decode(encode(event)) == event`` for every such event (times are microseconds, UTC).
* Decoding raises :class:`~tidings.errors.DecodeError` and nothing else, with one line naming
  the codec and the field: bodies larger than ``max_bytes``, not UTF-8, not JSON, JSON numbers
  that are not finite or past Python's integer digit limit, nesting too deep, missing or
  ill-typed fields, dates that are not RFC 3339 with an offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from tidings.errors import ConfigurationError, DecodeError
from tidings.events.codecs._json import MAX_EVENT_BYTES, _JsonCodec, _load
from tidings.events.codecs.cloudevents import CloudEventsCodec, schema_uri
from tidings.events.codecs.entity_event import EntityEventCodec
from tidings.events.model import MAX_ENTITY_VERSION, Event

__all__ = [
    "CODECS",
    "MAX_ENTITY_VERSION",
    "MAX_EVENT_BYTES",
    "CloudEventsCodec",
    "Codec",
    "EntityEventCodec",
    "decode",
    "detect",
    "encode",
    "get_codec",
    "schema_uri",
]


class Codec(Protocol):
    """Turns events into message bodies and back.

    ``encode`` is deterministic and ``decode(encode(e)) == e``. ``decode`` raises
    :class:`~tidings.errors.DecodeError`, and no other exception, for any body that is not an
    event in this codec's envelope. Codecs hold no state and are safe to share.
    """

    name: str
    content_type: str

    def encode(self, event: Event) -> bytes: ...

    def decode(self, body: bytes) -> Event: ...


_CLOUDEVENTS = CloudEventsCodec()
_ENTITY_EVENT = EntityEventCodec()

CODECS: Mapping[str, Codec] = MappingProxyType(
    {_CLOUDEVENTS.name: _CLOUDEVENTS, _ENTITY_EVENT.name: _ENTITY_EVENT}
)
"""The built-in codecs by name."""


def get_codec(name: str) -> Codec:
    """The built-in codec called ``name``; raises ConfigurationError for an unknown name."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(CODECS))
        raise ConfigurationError(f"unknown codec {name!r}; known: {known}") from None


def encode(event: Event, codec: str | Codec = "cloudevents") -> bytes:
    """``event`` as a message body in ``codec`` (a name or a codec object)."""
    return (get_codec(codec) if isinstance(codec, str) else codec).encode(event)


def detect(body: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Codec:
    """The codec whose envelope ``body`` is in; raises DecodeError for neither."""
    return _detect(_load(body, max_bytes))


def decode(body: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """The event in ``body``, whichever built-in envelope it is in; raises DecodeError."""
    obj = _load(body, max_bytes)
    return _detect(obj).from_dict(obj)


def _detect(obj: dict[str, Any]) -> _JsonCodec:
    if "specversion" in obj:
        return _CLOUDEVENTS
    if "eventType" in obj:
        return _ENTITY_EVENT
    raise DecodeError(
        "body: neither a CloudEvent (no 'specversion') nor an entity event (no 'eventType')"
    )
