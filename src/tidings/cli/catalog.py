"""``tidings asyncapi`` and ``tidings schemas``: a deployment's event contract as documents.

A deployment is a module with ``TOPOLOGY`` (a :class:`~tidings.topology.Topology`) and
``CATALOG`` (an :class:`~tidings.events.catalog.EventCatalog`); ``TOPIC_EVENTS``, optional,
says which event types each topic carries where :mod:`tidings.events.asyncapi` cannot infer
it. Failures to run are one line on stderr and exit 2; ``schemas check`` exits 1 when it
finds breaking changes, one line each on stdout.
"""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings import __version__
from tidings.cli.output import fail
from tidings.errors import TidingsError
from tidings.events.asyncapi import asyncapi_document
from tidings.events.catalog import EventCatalog
from tidings.events.compat import breaking_changes, load_schemas, schema_key
from tidings.topology import Topology

__all__ = ["asyncapi", "schemas_app"]

schemas_app = typer.Typer(no_args_is_help=True, help="JSON Schemas of the event catalog.")

DeploymentOption = Annotated[
    str,
    typer.Option(
        "--deployment", help="Module with CATALOG and TOPOLOGY (and optionally TOPIC_EVENTS)."
    ),
]
DEFAULT_DEPLOYMENT = "reference_deployment"


def _deployment(name: str) -> Any:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise fail(f"deployment {name!r} cannot be imported: {exc}") from None
    except TidingsError as exc:
        raise fail(f"deployment {name!r}: {exc}") from None
    if not isinstance(getattr(module, "CATALOG", None), EventCatalog):
        raise fail(f"deployment {name!r} has no CATALOG (an EventCatalog)")
    return module


def _topology(module: Any) -> Topology:
    topology = getattr(module, "TOPOLOGY", None)
    if not isinstance(topology, Topology):
        raise fail(f"deployment {module.__name__!r} has no TOPOLOGY (a Topology)")
    return topology


def asyncapi(
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    title: Annotated[
        str | None, typer.Option(help="info.title (default: the module name).")
    ] = None,
    doc_version: Annotated[
        str | None,
        typer.Option(
            "--doc-version", help="info.version (default: the module's __version__, else tidings')."
        ),
    ] = None,
) -> None:
    """Write the AsyncAPI 3.0.0 document (JSON) of a deployment's topics and events."""
    module = _deployment(deployment)
    topology = _topology(module)
    try:
        document = asyncapi_document(
            module.CATALOG,
            topology,
            title=title or deployment,
            version=doc_version or str(getattr(module, "__version__", __version__)),
            description=(module.__doc__ or "").strip(),
            topic_events=getattr(module, "TOPIC_EVENTS", None),
        )
    except TidingsError as exc:
        raise fail(f"{deployment}: {exc}") from None
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"{output}: {exc.strerror or exc}") from None
    typer.echo(
        f"wrote {output}: {len(document['channels'])} channels, "
        f"{len(document['operations'])} operations, "
        f"{len(document['components']['messages'])} messages"
    )


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write into (created if missing).")],
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
) -> None:
    """Write <EventType>.<version>.schema.json for every registered event type version."""
    catalog: EventCatalog = _deployment(deployment).CATALOG
    try:
        written = catalog.write_json_schemas(directory)
    except OSError as exc:
        raise fail(f"{directory}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {len(written)} schemas to {directory}")


@schemas_app.command("check")
def schemas_check(
    against: Annotated[
        str,
        typer.Option(
            "--against",
            help="A folder written by 'schemas export', or REV:PATH of such a folder in git.",
        ),
    ],
    deployment: DeploymentOption = DEFAULT_DEPLOYMENT,
) -> None:
    """Fail (exit 1) when the catalog would break consumers of the schemas in AGAINST."""
    catalog: EventCatalog = _deployment(deployment).CATALOG
    try:
        old = load_schemas(against) if Path(against).is_dir() else _git_schemas(against)
    except TidingsError as exc:
        raise fail(str(exc)) from None
    problems = breaking_changes(old, catalog.json_schemas())
    for line in problems:
        typer.echo(line)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{len(old)} schemas in {against}: no breaking change")


def _git_schemas(ref: str) -> dict[str, dict[str, Any]]:
    """The ``*.schema.json`` files of the folder ``REV:PATH`` in the git repository of the
    working directory (PATH from the repository root, or ``./`` relative)."""
    if ":" not in ref:
        raise fail(f"{ref}: not a folder, nor REV:PATH of a folder in git")
    tree = ref.rstrip("/")
    names = _git("ls-tree", "--name-only", "-z", tree).split("\0")
    schemas: dict[str, dict[str, Any]] = {}
    for name in sorted(n for n in names if n.endswith(".schema.json")):
        where = f"{tree}/{name}" if not tree.endswith(":") else f"{tree}{name}"
        try:
            schema = json.loads(_git("show", where))
            schemas[schema_key(schema)] = schema
        except (ValueError, TidingsError) as exc:
            raise fail(f"{where}: {exc}") from None
    if not schemas:
        raise fail(f"{ref}: no *.schema.json files")
    return schemas


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, encoding="utf-8", check=False
        )
    except OSError as exc:
        raise fail(f"git: {exc.strerror or exc}") from None
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise fail(f"git {args[0]} {args[-1]}: {lines[0]}")
    return done.stdout
