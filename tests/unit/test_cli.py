from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tidings.cli import app

runner = CliRunner()

TOML = """
[topics.person]
[subscriptions.tenure-listener]
topics = ["person"]
event_types = ["PersonUpdatedEvent"]
"""


def test_topology_apply_declares_on_the_broker_then_depth_reads_it(tmp_path: Path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(TOML)
    broker = f"sqlite:///{tmp_path}/broker.db"
    result = runner.invoke(
        app, ["topology", "apply", str(topology), "--broker", broker, "--home", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "applied 1 topics and 1 subscriptions" in result.output
    result = runner.invoke(app, ["depth", "tenure-listener", "--broker", broker, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "subscription": "tenure-listener",
        "ready": 0,
        "in_flight": 0,
        "delayed": 0,
        "dead": 0,
    }


def test_invalid_topology_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text('[topics.p]\n[subscriptions.s]\ntopics = ["q"]\n')
    result = runner.invoke(app, ["topology", "check", str(topology)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "unknown topic 'q'" in result.output


def test_unknown_subscription_and_bad_broker_url_fail_cleanly(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path}/broker.db"
    result = runner.invoke(app, ["depth", "nope", "--broker", broker])
    assert result.exit_code == 2 and "unknown subscription: nope" in result.output
    result = runner.invoke(app, ["depth", "s", "--broker", "carrier-pigeon://x"])
    assert result.exit_code == 2 and "unknown scheme" in result.output
