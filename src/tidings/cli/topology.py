"""``tidings topology show`` and ``topology apply``: the subscriptions a deployment declared,
and applying a topology file to the broker and the control store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tidings.brokers import Broker
from tidings.cli.ops import console, plain, with_broker, with_store
from tidings.cli.output import (
    DEFAULT_BROKER,
    DEFAULT_HOME,
    BrokerOption,
    DatabaseOption,
    HomeOption,
    JsonOption,
    control_url,
    fail,
    run,
)
from tidings.control import ControlStore
from tidings.errors import TidingsError, UnknownSubscription
from tidings.topology import Backoff, Subscription, Topology

__all__ = ["TopologyDiff", "diff", "topology_apply", "topology_show"]

FileArgument = Annotated[Path, typer.Argument(help="Topology TOML file.")]


@dataclass
class TopologyDiff:
    """How a topology's subscriptions differ from the ones the control store holds.
    ``changed`` maps a name to its changed fields, each ``(stored, new)``; ``kept`` are
    stored subscriptions the topology does not name (applying never deletes one)."""

    new: list[str] = field(default_factory=list)
    changed: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "changed": {
                name: {key: {"stored": old, "new": new} for key, (old, new) in fields.items()}
                for name, fields in self.changed.items()
            },
            "unchanged": self.unchanged,
            "kept": self.kept,
        }

    def lines(self) -> list[str]:
        out = [f"  new        {name}" for name in self.new]
        for name, fields in self.changed.items():
            what = "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in fields.items())
            out.append(f"  changed    {name} ({what})")
        out += [f"  unchanged  {name}" for name in self.unchanged]
        out += [f"  kept       {name} (stored, not in the file)" for name in self.kept]
        return out


def diff(stored: list[Subscription], topology: Topology) -> TopologyDiff:
    """Compare ``topology`` with the ``stored`` declaration, field by field."""
    before = {s.name: s.model_dump(mode="json") for s in stored}
    result = TopologyDiff()
    for sub in topology.subscriptions:
        old = before.pop(sub.name, None)
        new = sub.model_dump(mode="json")
        if old is None:
            result.new.append(sub.name)
            continue
        fields = {key: (old.get(key), value) for key, value in new.items() if old.get(key) != value}
        if fields:
            result.changed[sub.name] = fields
        else:
            result.unchanged.append(sub.name)
    result.kept = sorted(before)
    return result


def _load(path: Path) -> Topology:
    try:
        return Topology.from_toml(path)
    except TidingsError as exc:
        raise fail(str(exc)) from None


def topology_apply(
    file: FileArgument,
    broker: BrokerOption = DEFAULT_BROKER,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the topics and subscriptions of FILE on the broker (idempotent) and record them
    in the deployment's control store; print what changed against the stored declaration
    (new, changed, unchanged subscriptions)."""
    topology = _load(file)

    async def apply(store: ControlStore) -> TopologyDiff:
        changes = diff(await store.subscriptions(), topology)
        if not dry_run:
            await with_broker(broker, lambda b: b.declare(topology))
            await store.declared(topology)
        return changes

    changes: TopologyDiff = run(with_store(control_url(home, database_url), apply))
    if as_json:
        typer.echo(json.dumps({"applied": not dry_run, "broker": broker, **changes.as_json()}))
        return
    verb = "would apply" if dry_run else "applied"
    typer.echo(
        f"{verb} {len(topology.topics)} topics and {len(topology.subscriptions)} "
        f"subscriptions to {broker}"
    )
    for line in changes.lines():
        typer.echo(line)


def _backoff(b: Backoff) -> str:
    return f"{b.initial:g}s..{b.maximum:g}s x{b.multiplier:g} ±{b.jitter:.0%}"


def topology_show(
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="TIDINGS_BROKER",
            help="Also check that each subscription exists on this broker URL.",
        ),
    ] = None,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """The subscriptions the deployment declared (by tidings up or topology apply): topics,
    event-type filter and policies (max attempts, backoff, in flight, rate, lease)."""

    async def read(store: ControlStore) -> list[tuple[Subscription, bool | None]]:
        declared = await store.subscriptions()
        if broker is None:
            return [(s, None) for s in declared]

        async def present(b: Broker) -> list[tuple[Subscription, bool | None]]:
            found: list[tuple[Subscription, bool | None]] = []
            for sub in declared:
                try:
                    await b.depth(sub.name)
                    found.append((sub, True))
                except UnknownSubscription:
                    found.append((sub, False))
            return found

        return await with_broker(broker, present)

    rows: list[tuple[Subscription, bool | None]] = run(
        with_store(control_url(home, database_url), read)
    )
    if as_json:
        out = []
        for sub, on_broker in rows:
            entry = sub.model_dump(mode="json")
            if on_broker is not None:
                entry["on_broker"] = on_broker
            out.append(entry)
        typer.echo(json.dumps({"subscriptions": out}))
        return
    if not rows:
        typer.echo("no subscriptions declared (tidings up or tidings topology apply declares them)")
        return
    table = Table("subscription", "topics", "event types", "max attempts", "backoff")
    for column in ("in flight", "rate", "lease"):
        table.add_column(column)
    if broker is not None:
        table.add_column("on broker")
    for sub, on_broker in rows:
        cells = [
            sub.name,
            ", ".join(sub.topics),
            ", ".join(sub.event_types) or "all",
            str(sub.max_attempts),
            _backoff(sub.backoff),
            str(sub.in_flight),
            "unlimited" if sub.rate is None else f"{sub.rate:g}/s",
            f"{sub.lease_seconds:g}s",
        ]
        if on_broker is not None:
            cells.append("yes" if on_broker else "NO")
        table.add_row(*plain(*cells))
    console().print(table)
