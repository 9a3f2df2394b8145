"""The reference catalog never breaks the consumers of its last release: the schemas in
``services/housing_contracts/released`` (written by ``tidings schemas export``)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tidings.cli import app

RELEASED = Path(__file__).parents[2] / "services" / "housing_contracts" / "released"


def test_catalog_keeps_every_released_schema_compatible() -> None:
    assert sorted(p.name for p in RELEASED.glob("*.schema.json")), "no released schemas"
    result = CliRunner().invoke(app, ["schemas", "check", "--against", str(RELEASED)])
    assert result.exit_code == 0, result.output
