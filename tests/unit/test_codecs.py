from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.http import from_json as legacy_from_json
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tidings.errors import ConfigurationError, DecodeError, EventError
from tidings.events import (
    CODECS,
    MAX_ENTITY_VERSION,
    MAX_EVENT_BYTES,
    CloudEventsCodec,
    EntityEventCodec,
    Event,
    EventData,
    User,
    decode,
    detect,
    encode,
    get_codec,
)

EVENT_ID = uuid.UUID("8e648f3d-9556-4896-8400-211cb1c5451b")
WHEN = datetime(2021, 7, 8, 10, 0, 0, 123456, tzinfo=UTC)


def make_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "id": EVENT_ID,
        "event_type": "PersonUpdatedEvent",
        "source_domain": "Person",
        "source_system": "PersonAPI",
        "version": "v1",
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
        "date_time": WHEN,
        "user": User(name="Tester", email="tester@example.org"),
        "entity_id": "6fbe024f-2316-4265-a6e8-d65a837e308a",
        "entity_version": 7,
        "event_data": EventData(old_data={"firstName": "Jo"}, new_data={"firstName": "Joe"}),
    }
    fields.update(overrides)
    return Event(**fields)


COUNCIL_BODY = (
    b'{"id":"8e648f3d-9556-4896-8400-211cb1c5451b","eventType":"PersonUpdatedEvent",'
    b'"sourceDomain":"Person","sourceSystem":"PersonAPI","version":"v1",'
    b'"correlationId":"f4d541d0-7c07-4524-8296-2d0d50cb58b4",'
    b'"dateTime":"2021-07-08T10:00:00.1234567Z",'
    b'"user":{"name":"Tester","email":"tester@example.org"},'
    b'"entityId":"6fbe024f-2316-4265-a6e8-d65a837e308a",'
    b'"eventData":{"oldData":{"firstName":"Jo"},"newData":{"firstName":"Joe"}}}'
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
payloads = st.none() | st.dictionaries(st.text(), json_values, max_size=5)
names = st.text(min_size=1, max_size=40)
events = st.builds(
    make_event,
    id=st.uuids(),
    event_type=names,
    source_domain=names,
    source_system=names,
    version=st.text(min_size=1, max_size=10),
    correlation_id=names,
    causation_id=st.none() | st.text(max_size=40),
    date_time=st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ),
    user=st.none()
    | st.builds(lambda name, email: User(name=name, email=email), st.text(), st.text()),
    entity_id=names,
    entity_version=st.none() | st.integers(min_value=0, max_value=MAX_ENTITY_VERSION),
    event_data=st.builds(
        lambda old, new: EventData(old_data=old, new_data=new), payloads, payloads
    ),
)


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize(
    "event",
    [
        make_event(),
        make_event(causation_id=None, user=None, entity_version=None, event_data=EventData()),
        make_event(source_domain="Multi Word/Domain", source_system="ä ü?#%", entity_version=0),
    ],
    ids=["full", "optional-fields-none", "awkward-source"],
)
def test_round_trip_is_lossless(codec: str, event: Event) -> None:
    assert decode(encode(event, codec)) == event


@settings(max_examples=300, deadline=None)
@given(event=events, codec=st.sampled_from(sorted(CODECS)))
def test_any_event_survives_a_round_trip_in_every_codec(event: Event, codec: str) -> None:
    body = encode(event, codec)
    assert decode(body) == event
    assert encode(decode(body), codec) == body


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_encoding_is_deterministic_for_equal_events(codec: str) -> None:
    assert encode(make_event(), codec) == encode(make_event(), codec)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_lone_surrogate_in_payload_round_trips_as_json_escape(codec: str) -> None:
    event = make_event(event_data=EventData(new_data={"note": "broken \ud800 half"}))
    body = encode(event, codec)
    assert b"\\ud800" in body
    assert decode(body) == event


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_non_json_payload_is_refused_on_encode(codec: str) -> None:
    event = make_event(event_data=EventData(new_data={"when": datetime.now(UTC)}))
    with pytest.raises(EventError, match="not JSON-native"):
        encode(event, codec)


def test_cloudevent_carries_every_field_as_attribute_or_extension() -> None:
    wire = json.loads(encode(make_event(), "cloudevents"))
    assert wire == {
        "specversion": "1.0",
        "id": str(EVENT_ID),
        "type": "PersonUpdatedEvent",
        "source": "/Person/PersonAPI",
        "subject": "6fbe024f-2316-4265-a6e8-d65a837e308a",
        "time": "2021-07-08T10:00:00.123456Z",
        "datacontenttype": "application/json",
        "dataschema": "urn:tidings:schema:PersonUpdatedEvent:v1",
        "sourcedomain": "Person",
        "sourcesystem": "PersonAPI",
        "version": "v1",
        "correlationid": "corr-1",
        "causationid": "cause-1",
        "entityversion": 7,
        "username": "Tester",
        "useremail": "tester@example.org",
        "data": {"oldData": {"firstName": "Jo"}, "newData": {"firstName": "Joe"}},
    }


def test_cloudevent_omits_absent_optional_extensions() -> None:
    event = make_event(causation_id=None, user=None, entity_version=None)
    wire = json.loads(encode(event, "cloudevents"))
    assert not {"causationid", "entityversion", "username", "useremail"} & wire.keys()


def test_cloudevents_sdk_parses_what_we_write() -> None:
    parsed = JSONFormat().read(None, encode(make_event(), "cloudevents"))
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == str(EVENT_ID)
    assert parsed.get_type() == "PersonUpdatedEvent"
    assert parsed.get_source() == "/Person/PersonAPI"
    assert parsed.get_subject() == "6fbe024f-2316-4265-a6e8-d65a837e308a"
    assert parsed.get_time() == WHEN
    assert parsed.get_dataschema() == "urn:tidings:schema:PersonUpdatedEvent:v1"
    assert parsed.get_extension("correlationid") == "corr-1"
    assert parsed.get_extension("causationid") == "cause-1"
    assert parsed.get_extension("entityversion") == 7
    assert parsed.get_extension("sourcedomain") == "Person"
    assert parsed.get_extension("version") == "v1"
    assert parsed.get_extension("useremail") == "tester@example.org"
    assert parsed.get_data() == {"oldData": {"firstName": "Jo"}, "newData": {"firstName": "Joe"}}


def test_legacy_cloudevents_sdk_api_parses_what_we_write() -> None:
    parsed = legacy_from_json(encode(make_event(), "cloudevents"))
    assert parsed["type"] == "PersonUpdatedEvent"
    assert parsed["subject"] == "6fbe024f-2316-4265-a6e8-d65a837e308a"
    assert parsed["correlationid"] == "corr-1"
    assert parsed.data == {"oldData": {"firstName": "Jo"}, "newData": {"firstName": "Joe"}}


def test_cloudevent_written_by_the_sdk_decodes() -> None:
    attributes = {
        "id": "0b5f8f0e-3c1e-4a59-9f3f-5a5c1f0e2b7d",
        "type": "TenureUpdatedEvent",
        "source": "/Tenure/TenureAPI",
        "subject": "tenure-9",
        "time": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "datacontenttype": "application/json",
        "correlationid": "corr-9",
        "entityversion": 4,
    }
    body = JSONFormat().write(CloudEvent(attributes, {"newData": {"startDate": "2024-01-01"}}))
    event = decode(body)
    assert (event.event_type, event.source_domain, event.source_system) == (
        "TenureUpdatedEvent",
        "Tenure",
        "TenureAPI",
    )
    assert event.entity_id == "tenure-9"
    assert event.date_time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event.correlation_id == "corr-9"
    assert event.entity_version == 4
    assert event.version == "v1"
    assert event.user is None
    assert event.event_data == EventData(new_data={"startDate": "2024-01-01"})


def test_foreign_cloudevent_falls_back_to_source_dataschema_and_event_id() -> None:
    body = {
        "specversion": "1.0",
        "id": "3f6c5f52-4b52-4bc3-9b2d-2a65a6c9c7d2",
        "type": "AssetUpdatedEvent",
        "source": "/Asset%20Estate/AssetAPI",
        "subject": "asset-1",
        "time": "2024-01-02T03:04:05+01:00",
        "dataschema": "urn:tidings:schema:AssetUpdatedEvent:v3",
        "entityversion": "12",
    }
    event = decode(json.dumps(body).encode())
    assert (event.source_domain, event.source_system) == ("Asset Estate", "AssetAPI")
    assert event.version == "v3"
    assert event.correlation_id == body["id"]
    assert event.entity_version == 12
    assert event.date_time == datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert event.event_data == EventData()


def test_cloudevent_extensions_win_over_source() -> None:
    wire = json.loads(encode(make_event(), "cloudevents"))
    wire["source"] = "https://example.org/elsewhere"
    event = decode(json.dumps(wire).encode())
    assert (event.source_domain, event.source_system) == ("Person", "PersonAPI")


def test_council_message_with_seven_fractional_digits_decodes() -> None:
    event = decode(COUNCIL_BODY)
    assert event.id == EVENT_ID
    assert event.date_time == WHEN
    assert event.correlation_id == "f4d541d0-7c07-4524-8296-2d0d50cb58b4"
    assert event.entity_version is None
    assert event.causation_id is None
    assert event.user == User(name="Tester", email="tester@example.org")
    assert event.event_data.new_data == {"firstName": "Joe"}


def test_entity_event_output_is_byte_identical_to_the_council_envelope() -> None:
    council = COUNCIL_BODY.replace(b".1234567Z", b".1234560Z")
    assert encode(decode(council), "entity-event") == council


def test_entity_event_writes_causation_and_entity_version_beside_their_kin() -> None:
    wire = json.loads(encode(make_event(), "entity-event"))
    assert list(wire) == [
        "id",
        "eventType",
        "sourceDomain",
        "sourceSystem",
        "version",
        "correlationId",
        "causationId",
        "dateTime",
        "user",
        "entityId",
        "entityVersion",
        "eventData",
    ]
    assert wire["dateTime"] == "2021-07-08T10:00:00.1234560Z"


def test_entity_event_writes_null_user_like_dotnet() -> None:
    wire = json.loads(encode(make_event(user=None), "entity-event"))
    assert wire["user"] is None


def test_entity_event_ignores_unknown_keys_like_a_dotnet_consumer() -> None:
    wire = json.loads(COUNCIL_BODY)
    wire["extraTopLevel"] = {"x": 1}
    wire["user"]["role"] = "admin"
    wire["eventData"]["note"] = "ignored"
    assert decode(json.dumps(wire).encode()) == decode(COUNCIL_BODY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-07-08T10:00:00Z", datetime(2021, 7, 8, 10, tzinfo=UTC)),
        ("2021-07-08T10:00:00.1Z", datetime(2021, 7, 8, 10, 0, 0, 100000, tzinfo=UTC)),
        ("2021-07-08T10:00:00.1234567Z", WHEN),
        ("2021-07-08T10:00:00.123456789Z", WHEN),
        ("2021-07-08t10:00:00.123456z", WHEN),
        ("2021-07-08T11:00:00.123456+01:00", WHEN),
        ("2021-07-08T04:30:00.123456-05:30", WHEN),
    ],
)
def test_date_time_forms_that_decode(text: str, expected: datetime) -> None:
    wire = json.loads(COUNCIL_BODY)
    wire["dateTime"] = text
    assert decode(json.dumps(wire).encode()).date_time == expected


@pytest.mark.parametrize(
    "value",
    [
        "2021-07-08T10:00:00",
        "2021-07-08",
        "2021-13-08T10:00:00Z",
        "2021-07-08T24:00:00Z",
        "2021-07-08T10:00:00+24:00",
        "0001-01-01T00:00:00+01:00",
        "2021-07-08T10:00:00.Z",
        "２０２１-07-08T10:00:00Z",
        "yesterday",
        1625738400,
        None,
    ],
)
def test_invalid_date_time_is_a_decode_error_naming_the_field(value: object) -> None:
    wire = json.loads(COUNCIL_BODY)
    wire["dateTime"] = value
    with pytest.raises(DecodeError, match="dateTime"):
        decode(json.dumps(wire).encode())


def test_detect_tells_the_envelopes_apart() -> None:
    assert detect(encode(make_event(), "cloudevents")) is CODECS["cloudevents"]
    assert detect(COUNCIL_BODY) is CODECS["entity-event"]
    assert detect(b'{"specversion":"1.0","eventType":"X"}').name == "cloudevents"
    with pytest.raises(DecodeError, match="neither"):
        detect(b'{"type":"X"}')


def _council(**changes: Any) -> bytes:
    wire = json.loads(COUNCIL_BODY)
    for key, value in changes.items():
        if value is _DROP:
            del wire[key]
        else:
            wire[key] = value
    return json.dumps(wire).encode()


def _cloud(**changes: Any) -> bytes:
    wire = json.loads(encode(make_event(), "cloudevents"))
    for key, value in changes.items():
        if value is _DROP:
            wire.pop(key, None)
        else:
            wire[key] = value
    return json.dumps(wire).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xef\xbb\xbf{}", "not JSON"),
        (b'{"eventType": "\xff"}', "not UTF-8"),
        ('{"eventType":"x"}'.encode("utf-16"), "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'"text"', "expected a JSON object"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"eventType": 1e400}', "out of range"),
        (b'{"eventType": NaN}', "NaN"),
        (b'{"eventType": -Infinity}', "Infinity"),
        (b'{"eventType": ' + b"9" * 5000 + b"}", "out of range"),
        (b'{"hello": "world"}', "neither"),
        (_council(id=_DROP), "entity-event: id: missing"),
        (_council(id="not-a-uuid"), "entity-event: id:"),
        (_council(eventType=7), "entity-event: eventType:"),
        (_council(sourceDomain=""), "entity-event: sourceDomain:"),
        (_council(version=None), "entity-event: version:"),
        (_council(correlationId=["a"]), "entity-event: correlationId:"),
        (_council(entityId=_DROP), "entity-event: entityId: missing"),
        (_council(entityVersion=1.5), "entity-event: entityVersion:"),
        (_council(entityVersion=True), "entity-event: entityVersion:"),
        (_council(entityVersion=-1), "entity-event: entityVersion:"),
        (_council(entityVersion=10**400), "entity-event: entityVersion:"),
        (_council(entityVersion=2**63), "entity-event: entityVersion:"),
        (_cloud(entityversion=2**63), "cloudevents: entityversion:"),
        (_cloud(id="not-a-uuid"), "cloudevents: id:"),
        (_council(user="Tester"), "entity-event: user:"),
        (_council(user={"name": "Tester"}), "entity-event: user.email:"),
        (_council(user={"name": 1, "email": "e"}), "entity-event: user.name:"),
        (_council(eventData=_DROP), "entity-event: eventData: missing"),
        (_council(eventData=[]), "entity-event: eventData:"),
        (_council(eventData={"newData": "Joe"}), "entity-event: eventData.newData:"),
        (_council(causationId=3), "entity-event: causationId:"),
        (_council(entityId="\ud800"), "entity-event: entityId:"),
        (_cloud(specversion="0.3"), "cloudevents: specversion:"),
        (_cloud(id=_DROP), "cloudevents: id: missing"),
        (_cloud(type=5), "cloudevents: type:"),
        (_cloud(subject=_DROP), "cloudevents: subject: missing"),
        (_cloud(time=_DROP), "cloudevents: time: missing"),
        (_cloud(time="2021-07-08 10:00"), "cloudevents: time:"),
        (_cloud(sourcedomain=_DROP, source="urn:x"), "cloudevents: source:"),
        (_cloud(sourcesystem=_DROP, source=5), "cloudevents: source:"),
        (_cloud(sourcedomain=9), "cloudevents: sourcedomain:"),
        (_cloud(useremail=_DROP), "cloudevents: useremail: missing"),
        (_cloud(username=False), "cloudevents: username:"),
        (_cloud(entityversion="seven"), "cloudevents: entityversion:"),
        (_cloud(entityversion="9" * 30), "cloudevents: entityversion:"),
        (_cloud(correlationid=""), "cloudevents: correlationid:"),
        (_cloud(datacontenttype="application/xml"), "cloudevents: datacontenttype:"),
        (_cloud(data=_DROP, data_base64="e30="), "cloudevents: data_base64:"),
        (_cloud(data="text"), "cloudevents: data:"),
        (_cloud(data={"name": "Joe"}), "cloudevents: data:"),
        (_cloud(data={"newData": [1]}), "cloudevents: data.newData:"),
    ],
)
def test_malformed_body_is_a_decode_error_naming_the_field(body: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(body)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), codec=st.sampled_from(sorted(CODECS)), value=json_values)
def test_any_field_replaced_by_any_json_decodes_or_fails_cleanly(
    data: st.DataObject, codec: str, value: object
) -> None:
    wire = json.loads(encode(make_event(), codec))
    wire[data.draw(st.sampled_from(sorted(wire)))] = value
    with contextlib.suppress(DecodeError):
        decode(json.dumps(wire).encode())


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_raise_anything_but_decode_error(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(body)


def test_body_over_the_size_limit_is_refused_before_parsing() -> None:
    event = make_event(event_data=EventData(new_data={"blob": "x" * MAX_EVENT_BYTES}))
    body = encode(event, "cloudevents")
    with pytest.raises(DecodeError, match="over the limit"):
        decode(body)
    assert decode(body, max_bytes=2 * MAX_EVENT_BYTES) == event
    with pytest.raises(DecodeError, match="over the limit"):
        CloudEventsCodec().decode(encode(make_event(), "cloudevents"), max_bytes=100)


def test_non_bytes_body_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        decode("{}")  # type: ignore[arg-type]


def test_codec_objects_decode_only_their_own_envelope() -> None:
    with pytest.raises(DecodeError, match="entity-event: eventType: missing"):
        EntityEventCodec().decode(encode(make_event(), "cloudevents"))
    with pytest.raises(DecodeError, match="cloudevents: specversion"):
        CloudEventsCodec().decode(COUNCIL_BODY)


def test_get_codec_knows_the_built_ins_and_refuses_others() -> None:
    assert get_codec("cloudevents").content_type == "application/cloudevents+json"
    assert get_codec("entity-event").content_type == "application/json"
    with pytest.raises(ConfigurationError, match="unknown codec 'avro'"):
        get_codec("avro")
    with pytest.raises(ConfigurationError):
        encode(make_event(), "avro")


def test_encode_accepts_a_codec_object_and_defaults_to_cloudevents() -> None:
    assert encode(make_event(), EntityEventCodec()) == encode(make_event(), "entity-event")
    assert encode(make_event()) == encode(make_event(), "cloudevents")


def test_time_in_another_zone_is_written_in_utc() -> None:
    event = make_event(
        date_time=datetime(2021, 7, 8, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    )
    assert json.loads(encode(event, "cloudevents"))["time"] == "2021-07-08T10:00:00.000005Z"
    assert json.loads(encode(event, "entity-event"))["dateTime"] == "2021-07-08T10:00:00.0000050Z"


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_entity_version_past_int64_is_refused_by_model_and_on_encode(codec: str) -> None:
    with pytest.raises(ValidationError, match="entity_version"):
        make_event(entity_version=MAX_ENTITY_VERSION + 1)
    unchecked = make_event().model_copy(update={"entity_version": MAX_ENTITY_VERSION + 1})
    with pytest.raises(EventError, match="entityVersion"):
        encode(unchecked, codec)
    assert decode(encode(make_event(entity_version=MAX_ENTITY_VERSION), codec)).entity_version == (
        MAX_ENTITY_VERSION
    )
