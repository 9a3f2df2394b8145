"""Schema compatibility: each breaking change is named with its field, the rest pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from housing_contracts import catalog as housing_catalog
from tidings.cli import app
from tidings.errors import ConfigurationError
from tidings.events import EventCatalog
from tidings.events.compat import breaking_changes, load_schemas
from tidings.topology import Topology

runner = CliRunner()


class Address(BaseModel):
    postcode: str
    line1: str | None = None


class Person(BaseModel):
    """The baseline every variant below changes in one way."""

    id: str
    name: str
    age: int | None = None
    born: date | None = None
    tags: list[str] = Field(default_factory=list)
    address: Address | None = None


class Tree(BaseModel):
    label: str
    children: list[Tree] = Field(default_factory=list)


def schemas(data: type[BaseModel], *, domain: str | None = "People", **more: Any) -> Any:
    catalog = EventCatalog()
    catalog.register("PersonSaved", data=data, source_domain=domain)
    for event_type, model in more.items():
        catalog.register(event_type, data=model)
    return catalog.json_schemas()


OLD = schemas(Person)


def lines_for(data: type[BaseModel], **kwargs: Any) -> list[str]:
    return breaking_changes(OLD, schemas(data, **kwargs))


def test_unchanged_catalogs_and_an_exported_copy_are_compatible(tmp_path: Path) -> None:
    assert breaking_changes(OLD, schemas(Person)) == []
    housing_catalog.write_json_schemas(tmp_path)
    exported = load_schemas(tmp_path)
    assert exported.keys() == housing_catalog.json_schemas().keys()
    assert breaking_changes(exported, housing_catalog.json_schemas()) == []


def test_removed_field_is_named_in_old_and_new_data() -> None:
    class Changed(BaseModel):
        id: str
        name: str
        born: date | None = None
        tags: list[str] = Field(default_factory=list)
        address: Address | None = None

    assert lines_for(Changed) == [
        "PersonSaved v1: eventData.newData.age: removed",
        "PersonSaved v1: eventData.oldData.age: removed",
    ]


def test_retyped_field_names_both_types() -> None:
    class Changed(Person):
        age: str | None = None  # type: ignore[assignment]

    assert lines_for(Changed) == [
        "PersonSaved v1: eventData.newData.age: retyped from integer | null to null | string",
        "PersonSaved v1: eventData.oldData.age: retyped from integer | null to null | string",
    ]


def test_a_field_made_nullable_or_given_another_format_is_retyped() -> None:
    class Changed(Person):
        name: str | None  # type: ignore[assignment]
        born: datetime | None = None

    assert lines_for(Changed) == [
        "PersonSaved v1: eventData.newData.born: "
        "retyped from null | string(date) to null | string(date-time)",
        "PersonSaved v1: eventData.newData.name: retyped from string to null | string",
        "PersonSaved v1: eventData.oldData.born: "
        "retyped from null | string(date) to null | string(date-time)",
        "PersonSaved v1: eventData.oldData.name: retyped from string to null | string",
    ]


def test_changes_inside_referenced_models_and_array_items_are_found() -> None:
    class NewAddress(BaseModel):
        postcode: int
        line1: str | None = None

    class Changed(Person):
        tags: list[int] = Field(default_factory=list)  # type: ignore[assignment]
        address: NewAddress | None = None  # type: ignore[assignment]

    new_lines = [line for line in lines_for(Changed) if "newData" in line]
    assert new_lines == [
        "PersonSaved v1: eventData.newData.address.postcode: retyped from string to integer",
        "PersonSaved v1: eventData.newData.tags[]: retyped from string to integer",
    ]


def test_a_field_that_became_required_is_breaking() -> None:
    class Changed(Person):
        age: int | None

    assert lines_for(Changed) == [
        "PersonSaved v1: eventData.newData.age: became required",
        "PersonSaved v1: eventData.oldData.age: became required",
    ]


def test_a_new_required_field_and_a_field_no_longer_required_are_breaking() -> None:
    class Changed(Person):
        name: str = ""
        email: str

    assert lines_for(Changed) == [
        "PersonSaved v1: eventData.newData.email: added as required",
        "PersonSaved v1: eventData.newData.name: no longer required",
        "PersonSaved v1: eventData.oldData.email: added as required",
        "PersonSaved v1: eventData.oldData.name: no longer required",
    ]


def test_removed_event_type_version_is_breaking() -> None:
    old = schemas(Person, PersonGone=Person)
    assert breaking_changes(old, OLD) == ["PersonGone v1: event type version removed"]


def test_a_new_source_domain_changes_the_allowed_values() -> None:
    assert lines_for(Person, domain="Humans") == [
        'PersonSaved v1: sourceDomain: allowed values changed from "People" to "Humans"',
    ]


def test_optional_fields_new_types_and_new_versions_are_not_breaking() -> None:
    class Changed(Person):
        """A new description, too."""

        nickname: str | None = None
        pets: list[Address] = Field(default_factory=list)

    new = schemas(Changed, PersonArchived=Person)
    catalog = EventCatalog()
    catalog.register("PersonSaved", "v2", data=Tree)
    new |= catalog.json_schemas()
    assert breaking_changes(OLD, new) == []


def test_recursive_models_are_compared_without_looping() -> None:
    class Branch(BaseModel):
        label: int
        children: list[Branch] = Field(default_factory=list)

    old = schemas(Tree)
    assert breaking_changes(old, schemas(Tree)) == []
    changed = breaking_changes(old, schemas(Branch))
    assert "PersonSaved v1: eventData.newData.label: retyped from string to integer" in changed
    assert all("children[].children" not in line for line in changed)


def test_loading_rejects_an_empty_folder_and_a_file_that_is_not_a_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no \\*.schema.json files"):
        load_schemas(tmp_path)
    (tmp_path / "Broken.v1.schema.json").write_text("{")
    with pytest.raises(ConfigurationError, match="Broken.v1.schema.json"):
        load_schemas(tmp_path)
    (tmp_path / "Broken.v1.schema.json").write_text('{"type": "object"}')
    with pytest.raises(ConfigurationError, match="not an event schema"):
        load_schemas(tmp_path)


# --- the command -----------------------------------------------------------------------


@pytest.fixture
def deploy(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes ``people_deployment`` importable with a catalog of ``PersonSaved`` as ``data``."""

    def make(data: type[BaseModel]) -> str:
        catalog = EventCatalog()
        catalog.register("PersonSaved", data=data, source_domain="People")
        module = types.ModuleType("people_deployment")
        module.CATALOG = catalog  # type: ignore[attr-defined]
        module.TOPOLOGY = Topology.build(["people"])  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        return module.__name__

    return make


class Renamed(BaseModel):
    id: str
    full_name: str


def test_export_then_check_against_the_same_catalog_passes(deploy: Any, tmp_path: Path) -> None:
    name = deploy(Person)
    result = runner.invoke(app, ["schemas", "export", str(tmp_path), "--deployment", name])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 1 schemas to {tmp_path}\n"
    assert (tmp_path / "PersonSaved.v1.schema.json").exists()
    result = runner.invoke(
        app, ["schemas", "check", "--against", str(tmp_path), "--deployment", name]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"1 schemas in {tmp_path}: no breaking change\n"


def test_check_exits_1_with_one_line_per_breaking_change(deploy: Any, tmp_path: Path) -> None:
    runner.invoke(app, ["schemas", "export", str(tmp_path), "--deployment", deploy(Person)])
    name = deploy(Renamed)
    result = runner.invoke(
        app, ["schemas", "check", "--against", str(tmp_path), "--deployment", name]
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "PersonSaved v1: eventData.newData.name: removed" in lines
    assert "PersonSaved v1: eventData.newData.full_name: added as required" in lines
    assert len(lines) == 12  # in old and new data: five fields removed, one added
    assert all(line.startswith("PersonSaved v1: eventData.") for line in lines)
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("against", "message"),
    [
        ("no-such-folder", "not a folder, nor REV:PATH"),
        ("{tmp}", "no *.schema.json files"),
    ],
)
def test_check_fails_with_one_line_on_stderr_for_an_unusable_baseline(
    deploy: Any, tmp_path: Path, against: str, message: str
) -> None:
    args = ["schemas", "check", "--against", against.format(tmp=tmp_path)]
    result = runner.invoke(app, [*args, "--deployment", deploy(Person)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_check_reads_the_baseline_from_a_git_revision(
    deploy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    EventCatalog.write_json_schemas(sys.modules[deploy(Person)].CATALOG, tmp_path / "schemas")
    git("add", "schemas")
    git("commit", "-q", "-m", "release")
    monkeypatch.chdir(tmp_path)
    name = deploy(Renamed)
    result = runner.invoke(
        app, ["schemas", "check", "--against", "HEAD:schemas", "--deployment", name]
    )
    assert result.exit_code == 1, result.output
    assert "PersonSaved v1: eventData.newData.name: removed" in result.stdout.splitlines()
    result = runner.invoke(
        app, ["schemas", "check", "--against", "nope:schemas", "--deployment", name]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("tidings: git ls-tree nope:schemas: ")


def test_export_into_a_file_fails_with_one_line(deploy: Any, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("")
    result = runner.invoke(app, ["schemas", "export", str(target), "--deployment", deploy(Person)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(target) in result.stderr
