"""The operator commands over a real SQLite broker and control store in a temporary folder:
topology show/apply, subscriptions, pause/resume/throttle, trace, and paced redrive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tidings.brokers import Broker, Message, connect
from tidings.cli import app
from tidings.cli.dlq import paced_redrive
from tidings.control import ControlStore, ListenerBeat, TraceRecord
from tidings.topology import Subscription, Topology

runner = CliRunner()

TOML = """
[topics.person]
[topics.tenure]

[subscriptions.tenure-listener]
topics = ["person"]
event_types = ["PersonUpdatedEvent"]
in_flight = 8

[subscriptions.activity-listener]
topics = ["person", "tenure"]
rate = 50.0
"""


class Place:
    """A broker URL and the ``--home`` of a deployment, both in one temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker = f"sqlite:///{root}/broker.db"
        self.control = f"sqlite:///{root}/tidings.db"

    def cli(self, *args: str, broker: bool = True, input: str | None = None) -> Any:
        extra = ["--home", str(self.root)] + (["--broker", self.broker] if broker else [])
        return runner.invoke(app, [*args, *extra], input=input)

    def ok(self, *args: str, broker: bool = True) -> str:
        result = self.cli(*args, broker=broker)
        assert result.exit_code == 0, result.output
        return str(result.output)

    def apply(self, text: str = TOML) -> str:
        path = self.root / "topology.toml"
        path.write_text(text)
        return self.ok("topology", "apply", str(path))


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return Place(tmp_path)


def store_run(url: str, work: Any) -> Any:
    async def go() -> Any:
        async with ControlStore.open(url) as store:
            return await work(store)

    return asyncio.run(go())


def one_line_failure(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert result.output.strip().count("\n") == 0, result.output
    return str(result.output)


def test_topology_apply_records_the_declaration_and_prints_what_changed(place: Place) -> None:
    first = place.apply()
    assert "applied 2 topics and 2 subscriptions" in first
    assert "new        tenure-listener" in first and "new        activity-listener" in first
    stored = store_run(place.control, lambda s: s.subscriptions())
    assert [s.name for s in stored] == ["activity-listener", "tenure-listener"]
    assert {s.name: s.in_flight for s in stored}["tenure-listener"] == 8

    changed = TOML.replace("in_flight = 8", "in_flight = 4\nmax_attempts = 9")
    path = place.root / "changed.toml"
    path.write_text(changed)
    dry = place.ok("topology", "apply", str(path), "--dry-run", "--json")
    assert json.loads(dry) == {
        "applied": False,
        "broker": place.broker,
        "new": [],
        "changed": {
            "tenure-listener": {
                "in_flight": {"stored": 8, "new": 4},
                "max_attempts": {"stored": 5, "new": 9},
            }
        },
        "unchanged": ["activity-listener"],
        "kept": [],
    }
    stored = store_run(place.control, lambda s: s.subscription("tenure-listener"))
    assert stored.in_flight == 8, "a dry run changed the stored declaration"

    applied = place.ok("topology", "apply", str(path))
    assert "changed    tenure-listener (max_attempts: 5 -> 9; in_flight: 8 -> 4)" in applied
    assert "unchanged  activity-listener" in applied
    assert store_run(place.control, lambda s: s.subscription("tenure-listener")).in_flight == 4

    path.write_text('[topics.person]\n[subscriptions.other]\ntopics = ["person"]\n')
    kept = place.ok("topology", "apply", str(path))
    assert "new        other" in kept
    assert "kept       activity-listener" in kept and "kept       tenure-listener" in kept


def test_topology_show_lists_every_declared_subscription_with_its_policies(place: Place) -> None:
    place.apply()
    shown = json.loads(place.ok("topology", "show", "--json", broker=False))
    by_name = {s["name"]: s for s in shown["subscriptions"]}
    assert by_name["tenure-listener"]["event_types"] == ["PersonUpdatedEvent"]
    assert by_name["tenure-listener"]["in_flight"] == 8
    assert by_name["activity-listener"]["topics"] == ["person", "tenure"]
    assert by_name["activity-listener"]["rate"] == 50.0
    assert "on_broker" not in by_name["tenure-listener"]

    table = place.ok("topology", "show", broker=False)
    for text in ("tenure-listener", "PersonUpdatedEvent", "50/s", "1s..60s x2 ±20%", "30s"):
        assert text in table

    elsewhere = Topology.build(["person"], [Subscription(name="ghost", topics=("person",))])
    store_run(place.control, lambda s: s.declared(elsewhere))
    checked = json.loads(place.ok("topology", "show", "--json"))
    presence = {s["name"]: s["on_broker"] for s in checked["subscriptions"]}
    assert presence == {"activity-listener": True, "ghost": False, "tenure-listener": True}


async def _fill(url: str) -> None:
    broker = await connect(url)
    try:
        await broker.publish(
            "person",
            [
                Message(id=f"m{i}", event_type="PersonUpdatedEvent", key=f"p{i}", body=b"{}")
                for i in range(5)
            ],
        )
        async with broker.consume("tenure-listener") as consumer:
            await (await consumer.__anext__()).dead_letter("poison")
            held = await consumer.__anext__()
            await held.retry(60, "later")
    finally:
        await broker.close()


def test_subscriptions_report_depth_dead_letters_listeners_and_limits(place: Place) -> None:
    place.apply()
    asyncio.run(_fill(place.broker))
    now = datetime.now(UTC)

    async def report(store: ControlStore) -> None:
        for process, per_second, paused, seen in (
            ("host:1", 12.5, False, now),
            ("host:2", 7.5, True, now),
            ("host:3", 100.0, False, now - timedelta(minutes=5)),
        ):
            await store.beat(
                ListenerBeat("tenure-listener", process, 0, 10, per_second, paused, seen)
            )
        await store.set_controls("activity-listener", paused=True, in_flight=2)

    store_run(place.control, report)
    rows = {r["name"]: r for r in json.loads(place.ok("subscriptions", "--json"))}
    tenure, activity = rows["tenure-listener"], rows["activity-listener"]
    assert (tenure["ready"], tenure["delayed"], tenure["dead_letters"]) == (3, 1, 1)
    assert tenure["listeners"] == 2, "a listener silent for minutes was counted alive"
    assert tenure["listeners_paused"] == 1
    assert tenure["per_second"] == 20.0
    assert tenure["oldest_age_seconds"] is None
    assert tenure["limits"] == {"paused": False, "in_flight": 8, "rate": None, "overridden": []}
    assert activity["ready"] == 5 and activity["dead_letters"] == 0
    assert activity["limits"] == {
        "paused": True,
        "in_flight": 2,
        "rate": 50.0,
        "overridden": ["in_flight"],
    }

    table = place.ok("subscriptions")
    assert "paused" in table and "2*" in table and "20.0" in table
    assert "running (1/2 paused)" in table


def test_pause_resume_and_throttle_write_the_store_and_print_what_is_in_force(
    place: Place,
) -> None:
    place.apply()
    paused = place.ok("pause", "tenure-listener", broker=False)
    assert paused.strip() == (
        "tenure-listener: paused; in flight 8 (declared), rate unlimited (declared)"
    )
    throttled = place.ok(
        "throttle", "tenure-listener", "--in-flight", "3", "--rate", "2.5", broker=False
    )
    assert "in flight 3 (set), rate 2.5/s (set)" in throttled
    controls = store_run(place.control, lambda s: s.controls("tenure-listener"))
    assert (controls.paused, controls.in_flight, controls.rate) == (True, 3, 2.5)

    resumed = json.loads(place.ok("resume", "tenure-listener", "--json", broker=False))
    assert resumed == {
        "subscription": "tenure-listener",
        "paused": False,
        "in_flight": 3,
        "rate": 2.5,
        "overridden": ["in_flight", "rate"],
    }
    reset = json.loads(place.ok("throttle", "tenure-listener", "--reset", "--json", broker=False))
    assert (reset["in_flight"], reset["rate"], reset["overridden"]) == (8, None, [])
    partly = json.loads(
        place.ok("throttle", "activity-listener", "--rate", "5", "--json", broker=False)
    )
    assert (partly["in_flight"], partly["rate"], partly["overridden"]) == (16, 5.0, ["rate"])


def test_steering_refuses_unknown_subscriptions_and_bad_limits_in_one_line(place: Place) -> None:
    place.apply()
    for args in (
        ["pause", "nope"],
        ["resume", "nope"],
        ["throttle", "nope", "--rate", "1"],
        ["throttle", "tenure-listener"],
        ["throttle", "tenure-listener", "--in-flight", "0"],
        ["throttle", "tenure-listener", "--rate", "0"],
    ):
        result = place.cli(*args, broker=False)
        assert result.exit_code == 2, (args, result.output)
    unknown = one_line_failure(place.cli("pause", "nope", broker=False))
    assert "unknown subscription 'nope'" in unknown and "tenure-listener" in unknown
    controls = store_run(place.control, lambda s: s.all_controls())
    assert controls == {}, "a refused command wrote a control"


def test_unreachable_broker_or_database_is_one_line(place: Place) -> None:
    place.apply()
    broken = runner.invoke(
        app,
        ["subscriptions", "--home", str(place.root), "--broker", "amqp://guest:guest@127.0.0.1:1/"],
    )
    assert "RabbitMQ unavailable" in one_line_failure(broken)
    for args in (["pause", "x"], ["trace", "c"], ["topology", "show"], ["subscriptions"]):
        result = runner.invoke(app, [*args, "--database-url", "postgresql://u@127.0.0.1:1/db"])
        assert "control store postgresql://u@127.0.0.1:1/db" in one_line_failure(result), args


def _records(correlation: str) -> list[TraceRecord]:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

    def record(outcome: str, seconds: float, **where: Any) -> TraceRecord:
        return TraceRecord(
            correlation_id=correlation,
            event_id=where.pop("event_id", "e1"),
            event_type=where.pop("event_type", "PersonUpdatedEvent"),
            entity_id="p-1",
            outcome=outcome,
            process="host:1",
            at=at + timedelta(seconds=seconds),
            **where,
        )

    return [
        record("published", 0, topic="person"),
        record("retried", 0.1, subscription="tenure-listener", attempt=1, detail="[red]503[/red]"),
        record("applied", 1.2, subscription="tenure-listener", attempt=2),
        record("applied", 0.2, subscription="activity-listener", attempt=1),
        record("published", 1.5, topic="tenure", event_id="e2", event_type="TenureUpdatedEvent"),
        record("stale", 1.6, subscription="person-listener", attempt=1, event_id="e2"),
    ]


def test_trace_tells_the_story_of_one_correlation_id(place: Place) -> None:
    store_run(place.control, lambda s: s.record(_records("corr-1") + _records("corr-2")))
    story = json.loads(place.ok("trace", "corr-1", "--json", broker=False))
    assert story["events"] == 2
    assert story["subscriptions"] == ["activity-listener", "person-listener", "tenure-listener"]
    assert story["outcomes"] == {"applied": 2, "published": 2, "retried": 1, "stale": 1}
    steps = [(r["where"], r["outcome"], r["attempt"]) for r in story["records"]]
    assert steps == [  # by time, though the processes wrote them in another order
        ("person", "published", None),
        ("tenure-listener", "retried", 1),
        ("activity-listener", "applied", 1),
        ("tenure-listener", "applied", 2),
        ("tenure", "published", None),
        ("person-listener", "stale", 1),
    ]

    timeline = place.ok("trace", "corr-1", broker=False)
    assert "03:04:05.678" in timeline and "TenureUpdatedEvent" in timeline
    assert "[red]503[/red]" in timeline, "text from an event was read as markup"
    assert (
        "2 event(s); subscriptions reached: activity-listener, person-listener, "
        "tenure-listener; outcomes: applied 2, published 2, retried 1, stale 1"
    ) in timeline


def test_trace_of_an_unknown_correlation_id_says_so_and_exits_1(place: Place) -> None:
    store_run(place.control, lambda s: s.record(_records("corr-1")))
    result = place.cli("trace", "no-such-id", broker=False)
    assert "nothing recorded for correlation id 'no-such-id'" in one_line_failure(result, 1)


def test_every_operator_command_has_help_and_json() -> None:
    for command in (
        ["topology", "show"],
        ["topology", "apply"],
        ["subscriptions"],
        ["pause"],
        ["resume"],
        ["throttle"],
        ["trace"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "redrive"],
        ["dlq", "purge"],
    ):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "--json" in result.output, command
    assert "'-'" in runner.invoke(app, ["subscriptions", "--help"]).output


class Counting:
    """A real broker whose redrive calls are counted, group by group."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.groups: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    async def redrive(self, subscription: str, ids: Sequence[str] | None = None) -> int:
        self.groups.append(len(ids or []))
        return await self.broker.redrive(subscription, ids)


async def test_paced_redrive_keeps_to_its_rate_in_small_groups(tmp_path: Path) -> None:
    topology = Topology.build(["person"], [Subscription(name="copy", topics=("person",))])
    broker = await connect(f"sqlite:///{tmp_path}/broker.db")
    try:
        await broker.declare(topology)
        await broker.publish(
            "person",
            [Message(id=f"m{i}", event_type="E", key=f"k{i}", body=b"{}") for i in range(40)],
        )
        async with broker.consume("copy", prefetch=40) as consumer:
            for _ in range(40):
                await (await consumer.__anext__()).dead_letter("poison")
        counting = Counting(broker)
        started = time.monotonic()
        moved = await paced_redrive(counting, "copy", None, rate=80)  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
        assert moved == 40 and (await broker.depth("copy")).ready == 40
        assert counting.groups == [8] * 5
        assert 0.4 <= elapsed < 2.0, f"40 at 80/s took {elapsed:.2f}s"
    finally:
        await broker.close()
