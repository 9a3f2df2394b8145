"""An AsyncAPI 3.0.0 document of an event catalog and a topology.

What the document holds:

* a **channel per topic**, its address the topic name, its messages the event types published
  there (every registered version of each);
* a **message per event type version** (``components.messages``, keyed
  ``"<EventType>.<version>"``): ``name`` the event type, ``title`` ``"<EventType> <version>"``,
  ``correlationId`` the envelope's ``correlationId``, ``payload`` the ``entity-event``
  envelope schema of :meth:`~tidings.events.catalog.EventCatalog.json_schema` and so
  ``contentType`` ``application/json`` (the ``cloudevents`` codec carries the same fields
  under CloudEvents attribute names). Inside an AsyncAPI document ``#`` is the document, so
  the schema's ``$defs`` move to ``components.schemas`` (renamed ``<EventType>.<version>.<Name>``
  only when two schemas of one name differ) and its ``$id`` and ``$schema`` are left out, as
  they would rebase or contradict those references;
* a **send operation per topic** (``send.<topic>``): the publisher, with every message of the
  channel;
* a **receive operation per subscription and topic** (``receive.<subscription>.<topic>``,
  ``x-tidings-subscription`` naming the subscription): an AsyncAPI operation has exactly one
  channel, so a subscription bound to two topics has two. Its messages are those of the
  channel that the subscription's filter accepts.

Which topic carries an event type, first rule that applies:

1. ``topic_events`` (a deployment's ``TOPIC_EVENTS``), ``{topic: [event type, ...]}``, for the
   types it names;
2. the topic named like the type's ``source_domain``, ignoring case (``"Person"`` publishes
   to ``person``);
3. the one topic shared by every subscription whose filter names the type.

A type that no rule places is in ``components.messages`` only. Event types that a
subscription's filter names but the catalog does not know are left out of its operations.

The module imports the topology for type checking only, so that the event layer still
imports nothing of ours but :mod:`tidings.errors` at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tidings.errors import ConfigurationError
from tidings.events.catalog import EventCatalog, EventSpec
from tidings.events.codecs import EntityEventCodec

if TYPE_CHECKING:
    from tidings.topology import Topology

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document", "events_by_topic"]

ASYNCAPI_VERSION = "3.0.0"

_DEFS_REF = re.compile(r"#/\$defs/(?P<name>[^/]+)")


def events_by_topic(
    catalog: EventCatalog,
    topology: Topology,
    explicit: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[str]]:
    """The event types published on each topic of ``topology``, by the rules of this module.

    Every topic is a key; its types are sorted. Raises
    :class:`~tidings.errors.ConfigurationError` when ``explicit`` names a topic the topology
    lacks or a type the catalog lacks.
    """
    topics = [t.name for t in topology.topics]
    placed: dict[str, list[str]] = {name: [] for name in topics}
    named: set[str] = set()
    for topic, types in (explicit or {}).items():
        if topic not in placed:
            raise ConfigurationError(f"TOPIC_EVENTS: unknown topic {topic!r}")
        if isinstance(types, str):
            raise ConfigurationError(f"TOPIC_EVENTS.{topic}: expected a list of event types")
        for event_type in types:
            if not catalog.knows(event_type):
                raise ConfigurationError(f"TOPIC_EVENTS.{topic}: unknown event type {event_type!r}")
            placed[topic].append(event_type)
            named.add(event_type)
    by_lower = {name.lower(): name for name in topics}
    for event_type in catalog.event_types():
        if event_type in named:
            continue
        domains = {(spec.source_domain or "").lower() for spec in _versions(catalog, event_type)}
        matched = {by_lower[d] for d in domains if d in by_lower}
        if not matched:
            shared = [set(s.topics) for s in topology.subscriptions if event_type in s.event_types]
            common = set.intersection(*shared) if shared else set()
            matched = common if len(common) == 1 else set()
        for topic in matched:
            placed[topic].append(event_type)
    return {topic: sorted(set(types)) for topic, types in placed.items()}


def asyncapi_document(
    catalog: EventCatalog,
    topology: Topology,
    *,
    title: str,
    version: str,
    description: str = "",
    topic_events: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``catalog`` and ``topology`` as a JSON-ready dict.

    ``version`` is the version of the documented application, not of AsyncAPI. The output
    is deterministic: topics, subscriptions and messages appear in a fixed order.
    """
    content_type = EntityEventCodec.content_type
    schemas: dict[str, Any] = {}
    messages = {
        _message_id(spec): _message(spec, catalog, schemas, content_type)
        for spec in catalog.specs()
    }
    placed = events_by_topic(catalog, topology, topic_events)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in topology.topics:
        ids = [_message_id(s) for t in placed[topic.name] for s in _versions(catalog, t)]
        channels[topic.name] = {
            "address": topic.name,
            "title": topic.name,
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"} for mid in ids},
        }
        operations[f"send.{topic.name}"] = {
            "action": "send",
            "title": f"Publish to {topic.name}",
            "channel": {"$ref": f"#/channels/{topic.name}"},
            "messages": [_channel_message(topic.name, mid) for mid in ids],
        }
    for sub in topology.subscriptions:
        for topic_name in sub.topics:
            accepted = [
                _message_id(spec)
                for event_type in placed[topic_name]
                if sub.accepts(topic_name, event_type)
                for spec in _versions(catalog, event_type)
            ]
            operations[f"receive.{sub.name}.{topic_name}"] = {
                "action": "receive",
                "title": f"{sub.name} receives from {topic_name}",
                "channel": {"$ref": f"#/channels/{topic_name}"},
                "messages": [_channel_message(topic_name, mid) for mid in accepted],
                "x-tidings-subscription": sub.name,
            }
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    components: dict[str, Any] = {"messages": messages}
    if schemas:
        components["schemas"] = schemas
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": content_type,
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def _versions(catalog: EventCatalog, event_type: str) -> list[EventSpec]:
    return [catalog.spec(event_type, v) for v in catalog.versions(event_type)]


def _message_id(spec: EventSpec) -> str:
    return f"{spec.event_type}.{spec.version}"


def _channel_message(topic: str, message_id: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{topic}/messages/{message_id}"}


def _message(
    spec: EventSpec, catalog: EventCatalog, schemas: dict[str, Any], content_type: str
) -> dict[str, Any]:
    payload = catalog.json_schema(spec.event_type, spec.version)
    payload.pop("$schema", None)
    payload.pop("$id", None)
    defs: dict[str, Any] = payload.pop("$defs", {})
    names = {name: re.sub(r"[^A-Za-z0-9._-]", "_", name) for name in defs}
    lifted = {names[name]: _rewrite(schema, names) for name, schema in defs.items()}
    if any(schemas.get(key, schema) != schema for key, schema in lifted.items()):
        names = {name: f"{_message_id(spec)}.{key}" for name, key in names.items()}
        lifted = {names[name]: _rewrite(schema, names) for name, schema in defs.items()}
    schemas.update(lifted)
    message: dict[str, Any] = {
        "name": spec.event_type,
        "title": f"{spec.event_type} {spec.version}",
        "contentType": content_type,
        "correlationId": {"location": "$message.payload#/correlationId"},
        "payload": _rewrite(payload, names),
    }
    if spec.description:
        message["description"] = spec.description
    return message


def _rewrite(schema: Any, names: Mapping[str, str]) -> Any:
    """A copy of ``schema`` whose ``#/$defs/<name>`` references point into components."""
    if isinstance(schema, dict):
        result = {}
        for key, value in schema.items():
            match = _DEFS_REF.fullmatch(value) if key == "$ref" and isinstance(value, str) else None
            if match and match["name"] in names:
                result[key] = f"#/components/schemas/{names[match['name']]}"
            else:
                result[key] = _rewrite(value, names)
        return result
    if isinstance(schema, list):
        return [_rewrite(item, names) for item in schema]
    return schema
