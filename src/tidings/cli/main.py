"""The ``tidings`` command. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings import __version__
from tidings.brokers import Message, connect
from tidings.cli.catalog import asyncapi, schemas_app
from tidings.cli.dashboard import dashboard
from tidings.cli.dlq import dlq_app
from tidings.cli.ops import pause, resume, subscriptions, throttle
from tidings.cli.output import DEFAULT_BROKER, BrokerOption, JsonOption, fail, run
from tidings.cli.push import push
from tidings.cli.reconcile import reconcile_command
from tidings.cli.replay import replay_command
from tidings.cli.tail import events_app
from tidings.cli.topology import topology_apply, topology_show
from tidings.cli.trace import trace
from tidings.errors import TidingsError
from tidings.events import decode
from tidings.topology import Topology

__all__ = ["app", "main"]


app = typer.Typer(no_args_is_help=True, add_completion=False, help="tidings: events between APIs.")
topology_app = typer.Typer(no_args_is_help=True, help="Topics and subscriptions.")
app.add_typer(topology_app, name="topology")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dlq_app, name="dlq")
app.add_typer(events_app, name="events")
app.command("replay")(replay_command)
app.command("asyncapi")(asyncapi)
topology_app.command("show")(topology_show)
topology_app.command("apply")(topology_apply)
for command in (subscriptions, pause, resume, throttle, trace):
    app.command()(command)
app.command("dashboard")(dashboard)
app.command("push")(push)
app.command("reconcile")(reconcile_command)

FileArgument = Annotated[Path, typer.Argument(help="Topology TOML file.")]


def _load(path: Path) -> Topology:
    try:
        return Topology.from_toml(path)
    except TidingsError as exc:
        raise fail(str(exc)) from None


def _describe(topology: Topology) -> dict[str, Any]:
    return {
        "topics": [t.name for t in topology.topics],
        "subscriptions": [s.model_dump(mode="json") for s in topology.subscriptions],
    }


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@topology_app.command("check")
def topology_check(file: FileArgument, as_json: JsonOption = False) -> None:
    """Validate a topology file without touching any broker."""
    topology = _load(file)
    if as_json:
        typer.echo(json.dumps(_describe(topology)))
        return
    typer.echo(
        f"{file}: {len(topology.topics)} topics, {len(topology.subscriptions)} subscriptions"
    )


@app.command()
def depth(
    subscription: str, broker: BrokerOption = DEFAULT_BROKER, as_json: JsonOption = False
) -> None:
    """How much waits in SUBSCRIPTION: ready, in flight, delayed, dead."""

    async def read() -> Any:
        b = await connect(broker)
        try:
            return await b.depth(subscription)
        finally:
            await b.close()

    d = run(read())
    figures = {"ready": d.ready, "in_flight": d.in_flight, "delayed": d.delayed, "dead": d.dead}
    if as_json:
        typer.echo(json.dumps({"subscription": subscription, **figures}))
    else:
        typer.echo(f"{subscription}: " + " ".join(f"{k}={v}" for k, v in figures.items()))


@app.command()
def publish(
    topic: Annotated[str, typer.Option("--topic", help="Topic to publish to.")],
    file: Annotated[Path, typer.Option("--file", help="One event, in either envelope.")],
    broker: BrokerOption = DEFAULT_BROKER,
) -> None:
    """Publish one raw event (CloudEvents or entity-event JSON) exactly as written in FILE."""
    try:
        body = file.read_bytes()
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror or exc}") from None
    try:
        event = decode(body)
    except TidingsError as exc:
        raise fail(f"{file}: {exc}") from None
    message = Message(
        id=str(event.id),
        event_type=event.event_type,
        key=event.entity_id,
        body=body,
        headers={"correlation-id": event.correlation_id},
    )

    async def send() -> None:
        b = await connect(broker)
        try:
            await b.publish(topic, [message])
        finally:
            await b.close()

    run(send())
    typer.echo(f"published {event.event_type} {event.id} to {topic}")


@app.command()
def up(
    home: Annotated[Path, typer.Option(help="Data folder of the embedded default.")] = Path(
        ".tidings"
    ),
    broker: Annotated[
        str | None, typer.Option("--broker", help="Broker URL (default: SQLite in HOME).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Database for every domain.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the APIs listen on.")] = "127.0.0.1",
    base_port: Annotated[int, typer.Option(help="Port of the first API.")] = 8001,
    deployment: Annotated[str, typer.Option(help="Module of the deployment.")] = (
        "reference_deployment"
    ),
    instances: Annotated[int, typer.Option(help="Copies of each API and listener.")] = 1,
    scale: Annotated[
        list[str] | None,
        typer.Option(help="NAME=N copies of one process (e.g. tenure-listener=3); repeatable."),
    ] = None,
) -> None:
    """Run the reference deployment: its APIs and listeners, until Ctrl-C."""
    from tidings.cli.up import run_up

    run(
        run_up(
            home=home,
            broker=broker,
            database_url=database_url,
            host=host,
            base_port=base_port,
            deployment=deployment,
            instances=instances,
            scale=_scale(scale or []),
        )
    )


def _scale(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        name, _, count = item.partition("=")
        if not name or not count.isdigit() or int(count) < 1:
            raise fail(f"--scale {item!r}: expected NAME=N with N at least 1")
        counts[name] = int(count)
    return counts


def main() -> None:
    app()
