"""How ``tidings events tail`` prints one message."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from tidings.brokers import Message
from tidings.cli.tail import line
from tidings.events import Event, encode
from tidings.testing import event_message


def _event() -> Event:
    return Event(
        id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id="p1",
        entity_version=3,
        correlation_id="corr-1",
        date_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_line_shows_time_type_entity_version_and_correlation() -> None:
    text = line(event_message(_event()), raw=False, as_json=False)
    assert text.split() == [
        "2026-01-02T03:04:05+00:00",
        "PersonUpdatedEvent",
        "p1",
        "v3",
        "corr-1",
    ]


def test_line_decodes_the_entity_event_envelope_too() -> None:
    message = event_message(_event(), codec="entity-event")
    assert json.loads(line(message, raw=False, as_json=True)) == {
        "dateTime": "2026-01-02T03:04:05+00:00",
        "eventType": "PersonUpdatedEvent",
        "entityId": "p1",
        "entityVersion": 3,
        "correlationId": "corr-1",
        "id": "00000000-0000-4000-8000-000000000001",
    }


def test_raw_line_is_the_wire_body() -> None:
    message = event_message(_event())
    assert line(message, raw=True, as_json=False) == encode(_event(), "cloudevents").decode()


def test_undecodable_message_is_one_line_naming_it() -> None:
    message = Message(id="m-1", event_type="Broken", key="k", body=b"not json")
    text = line(message, raw=False, as_json=False)
    assert text.startswith("? Broken k (message m-1: ")
    assert "\n" not in text
