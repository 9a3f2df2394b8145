from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

import tidings.events
from tidings.errors import ConfigurationError, SchemaViolation, UnknownEventType
from tidings.events import (
    MAX_ENTITY_VERSION,
    Event,
    EventCatalog,
    EventData,
    ParsedData,
    encode,
)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Address(_Camel):
    post_code: str


class PersonCreated(_Camel):
    """A whole person."""

    first_name: str
    surname: str
    date_of_birth: date
    addresses: list[Address] = []


class PersonUpdated(_Camel):
    first_name: str | None = None
    surname: str | None = None
    date_of_birth: date | None = None


class TenureUpdated(_Camel):
    start_date: date | None = None


@pytest.fixture
def catalog() -> EventCatalog:
    catalog = EventCatalog()
    catalog.register("PersonCreatedEvent", data=PersonCreated, source_domain="Person")
    catalog.register("PersonUpdatedEvent", "v1", data=PersonUpdated, description="Changed fields")
    return catalog


def person_event(event_type: str = "PersonUpdatedEvent", **fields: Any) -> Event:
    defaults: dict[str, Any] = {
        "event_type": event_type,
        "source_domain": "Person",
        "source_system": "PersonAPI",
        "entity_id": "person-1",
        "event_data": EventData(old_data={"firstName": "Jo"}, new_data={"firstName": "Joe"}),
    }
    return Event(**(defaults | fields))


def test_catalog_lists_types_and_versions_it_was_given(catalog: EventCatalog) -> None:
    for version in ("v10", "v2", "v1"):
        catalog.register("TenureUpdatedEvent", version, data=TenureUpdated)
    assert catalog.event_types() == [
        "PersonCreatedEvent",
        "PersonUpdatedEvent",
        "TenureUpdatedEvent",
    ]
    assert catalog.versions("TenureUpdatedEvent") == ["v1", "v2", "v10"]
    assert catalog.versions("NoSuchEvent") == []
    assert catalog.knows("PersonUpdatedEvent")
    assert catalog.knows("PersonUpdatedEvent", "v1")
    assert not catalog.knows("PersonUpdatedEvent", "v2")
    assert not catalog.knows("NoSuchEvent")


def test_registering_the_same_spec_twice_is_a_no_op(catalog: EventCatalog) -> None:
    catalog.register("PersonUpdatedEvent", "v1", data=PersonUpdated, description="Changed fields")
    assert catalog.spec("PersonUpdatedEvent", "v1").data is PersonUpdated


def test_registering_another_model_for_a_taken_version_is_refused(catalog: EventCatalog) -> None:
    with pytest.raises(ConfigurationError, match="already registered with PersonUpdated"):
        catalog.register("PersonUpdatedEvent", "v1", data=TenureUpdated)
    assert catalog.spec("PersonUpdatedEvent", "v1").data is PersonUpdated


@pytest.mark.parametrize(
    ("event_type", "version", "data"),
    [
        ("Person/Updated", "v1", PersonUpdated),
        ("", "v1", PersonUpdated),
        ("PersonUpdatedEvent", "../v1", PersonUpdated),
        ("PersonUpdatedEvent", "v1", dict),
    ],
)
def test_invalid_registration_is_a_configuration_error(
    event_type: str, version: str, data: Any
) -> None:
    with pytest.raises(ConfigurationError):
        EventCatalog().register(event_type, version, data=data)


def test_payload_decorator_registers_the_model_with_its_docstring() -> None:
    catalog = EventCatalog()

    @catalog.payload("PersonCreatedEvent", "v2")
    class PersonCreatedV2(PersonCreated):
        """A whole person, second edition."""

    spec = catalog.spec("PersonCreatedEvent", "v2")
    assert spec.data is PersonCreatedV2
    assert spec.description == "A whole person, second edition."


def test_unknown_event_type_is_refused(catalog: EventCatalog) -> None:
    with pytest.raises(UnknownEventType) as caught:
        catalog.validate(person_event("PersonDeletedEvent"))
    assert (caught.value.event_type, caught.value.version) == ("PersonDeletedEvent", "v1")


def test_unknown_version_of_a_known_type_is_refused(catalog: EventCatalog) -> None:
    with pytest.raises(UnknownEventType) as caught:
        catalog.validate(person_event(version="v9"))
    assert caught.value.version == "v9"


def test_update_with_only_changed_fields_is_valid(catalog: EventCatalog) -> None:
    catalog.validate(person_event(event_data=EventData(new_data={"surname": "Smith"})))


def test_schema_violation_lists_every_failing_field_by_wire_name(catalog: EventCatalog) -> None:
    event = person_event(
        event_data=EventData(old_data={"dateOfBirth": []}, new_data={"firstName": 5, "surname": []})
    )
    with pytest.raises(SchemaViolation) as caught:
        catalog.validate(event)
    assert caught.value.errors == [
        "oldData.dateOfBirth: Input should be a valid date",
        "newData.firstName: Input should be a valid string",
        "newData.surname: Input should be a valid string",
    ]
    assert (caught.value.event_type, caught.value.version) == ("PersonUpdatedEvent", "v1")


def test_create_missing_a_required_field_violates_its_schema(catalog: EventCatalog) -> None:
    event = person_event(
        "PersonCreatedEvent",
        event_data=EventData(new_data={"firstName": "Jo", "dateOfBirth": "1990-01-02"}),
    )
    with pytest.raises(SchemaViolation) as caught:
        catalog.validate(event)
    assert caught.value.errors == ["newData.surname: Field required"]


def test_event_from_another_domain_than_registered_violates_its_schema(
    catalog: EventCatalog,
) -> None:
    event = person_event(
        "PersonCreatedEvent",
        source_domain="Tenure",
        event_data=EventData(
            new_data={"firstName": "Jo", "surname": "Li", "dateOfBirth": "1990-01-02"}
        ),
    )
    with pytest.raises(SchemaViolation, match="sourceDomain: expected 'Person', got 'Tenure'"):
        catalog.validate(event)


def test_parse_gives_typed_models_and_none_for_absent_data(catalog: EventCatalog) -> None:
    event = person_event(event_data=EventData(new_data={"dateOfBirth": "1990-01-02"}))
    parsed = catalog.parse(event, PersonUpdated)
    assert parsed == ParsedData(old=None, new=PersonUpdated(date_of_birth=date(1990, 1, 2)))
    assert parsed.new is not None and parsed.new.date_of_birth == date(1990, 1, 2)


def test_parse_refuses_a_model_other_than_the_registered_one(catalog: EventCatalog) -> None:
    with pytest.raises(ConfigurationError, match="not TenureUpdated"):
        catalog.parse(person_event(), TenureUpdated)


def test_json_schema_describes_the_entity_event_envelope(catalog: EventCatalog) -> None:
    schema = catalog.json_schema("PersonCreatedEvent", "v1")
    assert schema["$id"] == "urn:tidings:schema:PersonCreatedEvent:v1"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["description"] == "A whole person."
    assert set(schema["required"]) == {
        "id",
        "eventType",
        "sourceDomain",
        "sourceSystem",
        "version",
        "correlationId",
        "dateTime",
        "entityId",
        "eventData",
    }
    properties = schema["properties"]
    assert properties["eventType"] == {"const": "PersonCreatedEvent"}
    assert properties["version"] == {"const": "v1"}
    assert properties["sourceDomain"] == {"const": "Person"}
    assert properties["entityVersion"]["anyOf"][0]["maximum"] == MAX_ENTITY_VERSION
    new_data = properties["eventData"]["properties"]["newData"]["anyOf"][0]
    assert set(new_data["required"]) == {"firstName", "surname", "dateOfBirth"}
    assert new_data["properties"]["addresses"]["items"] == {"$ref": "#/$defs/Address"}
    assert "postCode" in schema["$defs"]["Address"]["properties"]


def test_json_schema_of_unknown_type_is_refused(catalog: EventCatalog) -> None:
    with pytest.raises(UnknownEventType):
        catalog.json_schema("PersonCreatedEvent", "v2")


def test_encoded_entity_event_conforms_to_the_exported_schema(catalog: EventCatalog) -> None:
    schema = catalog.json_schema("PersonCreatedEvent", "v1")
    data = {"firstName": "Jo", "surname": "Li", "dateOfBirth": "1990-01-02"}
    event = person_event("PersonCreatedEvent", event_data=EventData(new_data=data))
    body = json.loads(encode(event, "entity-event"))
    assert _violations(body, schema, schema) == []
    body["eventData"]["newData"]["surname"] = 7
    body["eventType"] = "PersonUpdatedEvent"
    assert _violations(body, schema, schema) == [
        "/eventType: not const",
        "/eventData/newData/surname: not string",
    ]


def test_json_schemas_are_keyed_by_type_and_version(catalog: EventCatalog) -> None:
    schemas = catalog.json_schemas()
    assert list(schemas) == ["PersonCreatedEvent/v1", "PersonUpdatedEvent/v1"]
    assert schemas["PersonUpdatedEvent/v1"] == catalog.json_schema("PersonUpdatedEvent", "v1")


def test_write_json_schemas_writes_one_stable_file_per_version(
    catalog: EventCatalog, tmp_path: Path
) -> None:
    folder = tmp_path / "schemas"
    paths = catalog.write_json_schemas(folder)
    assert [p.name for p in paths] == [
        "PersonCreatedEvent.v1.schema.json",
        "PersonUpdatedEvent.v1.schema.json",
    ]
    first = [p.read_bytes() for p in paths]
    assert json.loads(first[1]) == catalog.json_schema("PersonUpdatedEvent", "v1")
    catalog.write_json_schemas(folder)
    assert [p.read_bytes() for p in paths] == first


def test_events_package_exports_exactly_its_public_api() -> None:
    exported = set(tidings.events.__all__)
    assert all(hasattr(tidings.events, name) for name in exported)
    public = {
        name
        for name, value in vars(tidings.events).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("tidings")
    }
    assert public <= exported


_TYPES = {
    "object": dict,
    "string": str,
    "array": list,
    "null": type(None),
    "boolean": bool,
}


def _violations(
    value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = ""
) -> list[str]:
    """The few JSON Schema keywords the exported schemas use, enough to check conformance."""
    if "$ref" in schema:
        return _violations(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, at)
    if "anyOf" in schema:
        options = [_violations(value, option, root, at) for option in schema["anyOf"]]
        return [] if [] in options else min(options, key=len)
    if "const" in schema and value != schema["const"]:
        return [f"{at}: not const"]
    kind = schema.get("type")
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"{at}: not integer"]
    if kind in _TYPES and not isinstance(value, _TYPES[kind]):
        return [f"{at}: not {kind}"]
    problems = [f"{at}/{key}: missing" for key in schema.get("required", []) if key not in value]
    for key, sub in schema.get("properties", {}).items():
        if isinstance(value, dict) and key in value:
            problems += _violations(value[key], sub, root, f"{at}/{key}")
    if "items" in schema and isinstance(value, list):
        for index, item in enumerate(value):
            problems += _violations(item, schema["items"], root, f"{at}/{index}")
    return problems
