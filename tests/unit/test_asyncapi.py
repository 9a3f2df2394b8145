"""The AsyncAPI document: its structure, its acceptance by the official parser, the CLI."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, create_model
from typer.testing import CliRunner

import reference_deployment
from housing_contracts import catalog as housing_catalog
from tidings.cli import app
from tidings.errors import ConfigurationError
from tidings.events import EventCatalog
from tidings.events.asyncapi import asyncapi_document, events_by_topic
from tidings.topology import Subscription, Topology

TOOLS = Path(__file__).parents[1] / "tools"
VALIDATE = TOOLS / "validate.mjs"
PARSER = TOOLS / "node_modules" / "@asyncapi" / "parser" / "package.json"

runner = CliRunner()


def reference_document() -> dict[str, Any]:
    return asyncapi_document(
        housing_catalog, reference_deployment.TOPOLOGY, title="Housing", version="1.2.3"
    )


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def receive(document: dict[str, Any], subscription: str, topic: str) -> list[str]:
    operation = document["operations"][f"receive.{subscription}.{topic}"]
    return [ref.rsplit("/", 1)[1] for ref in refs(operation["messages"])]


def outer(code: type) -> type[BaseModel]:
    """A payload whose nested model is named ``Inner`` and has a ``code`` of type ``code``."""
    inner = create_model("Inner", code=(code, ...))
    return create_model("Outer", inner=(inner, ...))


class Note(BaseModel):
    text: str


def varied_catalog() -> tuple[EventCatalog, Topology]:
    """Two versions of a type, two payloads whose nested models share a name but not a
    schema, a type placed only by a subscription's filter, and a type no rule places."""
    catalog = EventCatalog()
    catalog.register("OrderPlaced", "v1", data=outer(str), source_domain="Orders")
    catalog.register("OrderPlaced", "v2", data=outer(int), source_domain="Orders")
    catalog.register("NoteAdded", data=Note)
    catalog.register("Unrouted", data=Note)
    topology = Topology.build(
        ["orders", "notes"],
        [
            Subscription(name="billing", topics=("orders",), event_types=("OrderPlaced",)),
            Subscription(name="audit", topics=("orders", "notes"), event_types=("NoteAdded",)),
            Subscription(name="archive", topics=("notes",), event_types=("NoteAdded",)),
        ],
    )
    return catalog, topology


def test_each_topic_is_a_channel_carrying_the_types_its_domain_publishes() -> None:
    document = reference_document()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {"title": "Housing", "version": "1.2.3"}
    assert {name: c["address"] for name, c in document["channels"].items()} == {
        "person": "person",
        "tenure": "tenure",
    }
    assert list(document["channels"]["person"]["messages"]) == [
        "PersonCreatedEvent.v1",
        "PersonUpdatedEvent.v1",
    ]
    assert list(document["channels"]["tenure"]["messages"]) == [
        "PersonAddedToTenureEvent.v1",
        "PersonRemovedFromTenureEvent.v1",
        "TenureCreatedEvent.v1",
        "TenureUpdatedEvent.v1",
    ]


def test_each_message_is_an_event_type_version_with_its_envelope_schema() -> None:
    document = reference_document()
    messages = document["components"]["messages"]
    assert set(messages) == {f"{s.event_type}.{s.version}" for s in housing_catalog.specs()}
    created = messages["PersonCreatedEvent.v1"]
    assert created["name"] == "PersonCreatedEvent"
    assert created["title"] == "PersonCreatedEvent v1"
    assert created["contentType"] == "application/json"
    assert created["correlationId"] == {"location": "$message.payload#/correlationId"}
    expected = housing_catalog.json_schema("PersonCreatedEvent", "v1")
    for key in ("$schema", "$id"):
        expected.pop(key)
    assert created["payload"] == expected


def test_nested_models_move_to_components_so_every_reference_resolves() -> None:
    document = reference_document()
    assert "#/$defs/" not in json.dumps(document)
    payload = document["components"]["messages"]["TenureCreatedEvent.v1"]["payload"]
    new_data = payload["properties"]["eventData"]["properties"]["newData"]["anyOf"][0]
    members = new_data["properties"]["householdMembers"]["items"]
    assert members == {"$ref": "#/components/schemas/HouseholdMember"}
    assert "fullName" in resolve(document, members["$ref"])["properties"]
    for ref in refs(document):
        assert resolve(document, ref) is not None, ref


def test_publisher_sends_every_message_and_each_subscription_receives_what_it_filters() -> None:
    document = reference_document()
    operations = document["operations"]
    assert operations["send.person"]["action"] == "send"
    assert operations["send.person"]["messages"] == [
        {"$ref": "#/channels/person/messages/PersonCreatedEvent.v1"},
        {"$ref": "#/channels/person/messages/PersonUpdatedEvent.v1"},
    ]
    receives = {k for k, op in operations.items() if op["action"] == "receive"}
    assert receives == {
        "receive.tenure-listener.person",
        "receive.tenure-listener.tenure",
        "receive.person-listener.tenure",
        "receive.activity-listener.person",
        "receive.activity-listener.tenure",
        "receive.alerts.tenure",
    }
    assert receive(document, "alerts", "tenure") == [
        "PersonRemovedFromTenureEvent.v1",
        "TenureUpdatedEvent.v1",
    ]
    assert receive(document, "tenure-listener", "person") == ["PersonUpdatedEvent.v1"]
    assert receive(document, "tenure-listener", "tenure") == [
        "PersonAddedToTenureEvent.v1",
        "TenureCreatedEvent.v1",
    ]
    assert len(receive(document, "activity-listener", "tenure")) == 4
    listener = operations["receive.tenure-listener.person"]
    assert listener["channel"] == {"$ref": "#/channels/person"}
    assert listener["x-tidings-subscription"] == "tenure-listener"


def test_placement_falls_back_to_the_topic_shared_by_the_filters_naming_a_type() -> None:
    catalog, topology = varied_catalog()
    assert events_by_topic(catalog, topology) == {
        "orders": ["OrderPlaced"],
        "notes": ["NoteAdded"],
    }
    document = asyncapi_document(catalog, topology, title="t", version="1")
    assert list(document["channels"]["orders"]["messages"]) == ["OrderPlaced.v1", "OrderPlaced.v2"]
    assert "Unrouted.v1" in document["components"]["messages"]
    assert "Unrouted" not in json.dumps(document["channels"])
    assert receive(document, "audit", "orders") == []
    assert receive(document, "audit", "notes") == ["NoteAdded.v1"]


def test_explicit_topic_events_override_inference_and_are_checked() -> None:
    catalog, topology = varied_catalog()
    placed = events_by_topic(catalog, topology, {"notes": ["Unrouted", "OrderPlaced"]})
    assert placed == {"orders": [], "notes": ["NoteAdded", "OrderPlaced", "Unrouted"]}
    with pytest.raises(ConfigurationError, match="unknown topic 'nope'"):
        events_by_topic(catalog, topology, {"nope": ["NoteAdded"]})
    with pytest.raises(ConfigurationError, match="unknown event type 'Nope'"):
        events_by_topic(catalog, topology, {"notes": ["Nope"]})


def test_nested_models_of_one_name_but_different_schemas_get_distinct_components() -> None:
    catalog, topology = varied_catalog()
    schemas = asyncapi_document(catalog, topology, title="t", version="1")["components"]["schemas"]
    assert schemas["Inner"]["properties"]["code"]["type"] == "string"
    assert schemas["OrderPlaced.v2.Inner"]["properties"]["code"]["type"] == "integer"


def test_the_document_is_deterministic_and_leaves_the_catalog_untouched() -> None:
    before = housing_catalog.json_schemas()
    assert json.dumps(reference_document()) == json.dumps(reference_document())
    assert housing_catalog.json_schemas() == before


# --- the official parser ---------------------------------------------------------------


def validate(document: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    """Runs tests/tools/validate.mjs on ``document``. Skips the calling test where Node.js or
    the parser is missing (``make tools`` installs it), and fails it under ``CI=true``."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "Node.js is not on PATH"
    elif not PARSER.exists():
        missing = "@asyncapi/parser is not installed: run make tools"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} (required under CI=true)")
        pytest.skip(missing)
    assert node is not None
    path.write_text(json.dumps(document, indent=2))
    return subprocess.run(
        [node, str(VALIDATE), str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_official_parser_accepts_the_reference_document(tmp_path: Path) -> None:
    done = validate(reference_document(), tmp_path / "asyncapi.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 error(s)" in done.stdout


def test_the_official_parser_accepts_versions_name_clashes_and_empty_receives(
    tmp_path: Path,
) -> None:
    catalog, topology = varied_catalog()
    document = asyncapi_document(catalog, topology, title="t", version="1", description="d")
    done = validate(document, tmp_path / "asyncapi.json")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_fails_on_an_error_diagnostic(tmp_path: Path) -> None:
    document = copy.deepcopy(reference_document())
    foreign = {"$ref": "#/channels/tenure/messages/TenureCreatedEvent.v1"}
    document["operations"]["receive.tenure-listener.person"]["messages"].append(foreign)
    done = validate(document, tmp_path / "asyncapi.json")
    assert done.returncode == 1
    assert "error operations.receive.tenure-listener.person.messages" in done.stdout


# --- the command -----------------------------------------------------------------------


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Registers an importable deployment module with the given attributes."""

    def make(name: str, **attributes: Any) -> str:
        module = types.ModuleType(name, "A test deployment.")
        for key, value in attributes.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
        return name

    return make


def test_asyncapi_command_writes_the_document_of_the_deployment(
    deployment: Callable[..., str], tmp_path: Path
) -> None:
    catalog, topology = varied_catalog()
    name = deployment("orders_deployment", CATALOG=catalog, TOPOLOGY=topology, __version__="2.0")
    output = tmp_path / "asyncapi.json"
    result = runner.invoke(app, ["asyncapi", "--deployment", name, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {output}: 2 channels, 6 operations, 4 messages\n"
    expected = asyncapi_document(
        catalog, topology, title=name, version="2.0", description="A test deployment."
    )
    assert json.loads(output.read_text()) == expected


def test_asyncapi_command_uses_topic_events_of_the_deployment(
    deployment: Callable[..., str],
) -> None:
    catalog, topology = varied_catalog()
    name = deployment(
        "orders_deployment",
        CATALOG=catalog,
        TOPOLOGY=topology,
        TOPIC_EVENTS={"notes": ["Unrouted"]},
    )
    result = runner.invoke(app, ["asyncapi", "--deployment", name, "--title", "Orders"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["info"]["title"] == "Orders"
    assert "Unrouted.v1" in document["channels"]["notes"]["messages"]


def test_asyncapi_command_defaults_to_the_reference_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reference_deployment, "CATALOG", housing_catalog, raising=False)
    result = runner.invoke(app, ["asyncapi"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["info"]["title"] == "reference_deployment"
    assert document["channels"] == reference_document()["channels"]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"TOPOLOGY": Topology()}, "has no CATALOG"),
        ({"CATALOG": EventCatalog()}, "has no TOPOLOGY"),
        (
            {"CATALOG": EventCatalog(), "TOPOLOGY": Topology(), "TOPIC_EVENTS": {"x": []}},
            "unknown topic 'x'",
        ),
    ],
)
def test_asyncapi_command_fails_with_one_line_for_an_unusable_deployment(
    deployment: Callable[..., str], attributes: dict[str, Any], message: str
) -> None:
    name = deployment("broken_deployment", **attributes)
    result = runner.invoke(app, ["asyncapi", "--deployment", name])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_asyncapi_command_fails_cleanly_for_a_missing_module() -> None:
    result = runner.invoke(app, ["asyncapi", "--deployment", "no_such_deployment_module"])
    assert result.exit_code == 2
    assert result.stderr.startswith("tidings: deployment 'no_such_deployment_module' cannot")
