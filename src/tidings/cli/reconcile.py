"""``tidings reconcile SUBSET``: compare every copy a subset keeps with its source API, report
the drift, and with ``--fix`` repair it (see :mod:`tidings.subsets.reconcile`).

Where it finds what it needs, for a deployment started by ``tidings up``:

- the subset, by name, in the deployment module's ``SUBSETS``;
- the holder's database from ``--home`` and ``--database-url``, as every process of the
  deployment does (:class:`tidings.config.Settings`);
- the source API at ``--source-url``, else ``TIDINGS_<SOURCE>_API_URL`` (the variable the
  deployment's listeners read), else where ``tidings up --host --base-port`` puts it;
- a token: ``TIDINGS_SERVICE_TOKEN`` when set, else one minted from ``<home>/jwt-secret``,
  the secret the deployment's APIs verify with. ``tidings up`` hands its service token only
  to its own processes, and the developer token it writes may write; reconcile only reads,
  so it signs short-lived tokens of its own with no write group, one per read.

Exit codes: 0 when no copy is left drifted or orphaned, 1 when one is, 2 on a mistake or an
unreachable database or API.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tidings.cli.output import DEFAULT_HOME, DatabaseOption, HomeOption, JsonOption, fail, run
from tidings.config import Settings
from tidings.db import create_engine
from tidings.errors import TidingsError
from tidings.subsets import (
    Finding,
    Report,
    SourceClient,
    SourceRefused,
    SourceUnavailable,
    Status,
    Subset,
    reconcile,
)
from tidings.web import mint_token

__all__ = ["reconcile_command"]

TOKEN_SUBJECT = "tidings-reconcile"
TOKEN_SECONDS = 300


def reconcile_command(
    subset: Annotated[str, typer.Argument(help="Subset name, e.g. tenure-household-members.")],
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Write the source's values to drifted copies (guarded)."),
    ] = False,
    deployment: Annotated[str, typer.Option(help="Module of the deployment.")] = (
        "reference_deployment"
    ),
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    source_url: Annotated[
        str | None,
        typer.Option(
            "--source-url",
            help="The source API (default: TIDINGS_<SOURCE>_API_URL, else from --base-port).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the APIs listen on.")] = "127.0.0.1",
    base_port: Annotated[int, typer.Option(help="Port of the first API, as given to up.")] = 8001,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Source entities read at once.")
    ] = 4,
    show: Annotated[
        int, typer.Option(min=0, help="Differing fields listed at most (--json lists all).")
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """Compare every copy SUBSET keeps with its source API; report drift; --fix repairs it."""
    chosen = _subset(deployment, subset)
    url = source_url or _source_url(deployment, chosen.source, host, base_port)
    token = _token(home)
    database = Settings(home=home, broker_url="", database_url=database_url).domain_database_url(
        chosen.domain
    )
    _check_database(database, chosen.domain)
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"[bold]{chosen.name}[/] {'fixing' if fix else 'checking'}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json or not console.is_terminal,
    ) as bar:
        task = bar.add_task("copies", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = run(_run(chosen, database, url, token, fix, concurrency, advance))
    if as_json:
        typer.echo(json.dumps({**report.to_json(), "fix": fix, "sourceUrl": url}))
    else:
        _print(chosen, report, show, fix)
    if report.remaining:
        raise typer.Exit(1)


async def _run(
    subset: Subset,
    database: str,
    url: str,
    token: Callable[[], str],
    fix: bool,
    concurrency: int,
    progress: Callable[[int, int], None],
) -> Report:
    engine = create_engine(database)
    try:
        async with SourceClient(url, token=token) as source:
            return await reconcile(
                subset, engine, source, fix=fix, concurrency=concurrency, progress=progress
            )
    except (SourceUnavailable, SourceRefused) as exc:
        raise TidingsError(f"the {subset.source} API could not be read: {exc}") from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise TidingsError(f"the {subset.domain} database: {reason}") from None
    finally:
        await engine.dispose()


def _deployment(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise fail(f"deployment {name!r} cannot be imported: {exc}") from None


def _subset(deployment: str, name: str) -> Subset:
    subsets: Mapping[str, Subset] = getattr(_deployment(deployment), "SUBSETS", {})
    if name not in subsets:
        known = ", ".join(sorted(subsets)) or "none"
        raise fail(f"unknown subset {name!r}; known: {known}")
    return subsets[name]


def _source_url(deployment: str, source: str, host: str, base_port: int) -> str:
    from_env = os.environ.get(f"TIDINGS_{source.upper()}_API_URL")
    if from_env:
        return from_env
    ports = list(getattr(_deployment(deployment), "PORTS", {}))
    if source not in ports:
        raise fail(f"the deployment runs no {source} API; give --source-url")
    return f"http://{host}:{base_port + ports.index(source)}"


def _token(home: Path) -> Callable[[], str]:
    given = os.environ.get("TIDINGS_SERVICE_TOKEN")
    if given:
        return lambda: given
    try:
        secret = (home / "jwt-secret").read_text().strip()
    except OSError:
        raise fail(
            f"no {home / 'jwt-secret'}: give the --home of a deployment started by tidings up, "
            "or set TIDINGS_SERVICE_TOKEN"
        ) from None

    def mint() -> str:
        return mint_token(
            secret,
            subject=TOKEN_SUBJECT,
            name="tidings reconcile",
            email="",
            groups=["tidings-services"],
            ttl_seconds=TOKEN_SECONDS,
        )

    try:
        mint()
    except TidingsError as exc:
        raise fail(f"{home / 'jwt-secret'}: {exc}") from None
    return mint


def _check_database(url: str, domain: str) -> None:
    """Refuse a SQLite file that does not exist (connecting would create an empty one)."""
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() == "sqlite" and path and not Path(path).exists():
        raise fail(f"no {domain} database at {path}; is --home the deployment's folder?")


def _print(subset: Subset, report: Report, show: int, fix: bool) -> None:
    console = Console(highlight=False, soft_wrap=True)
    table = Table(title=f"{subset.name}: {subset.domain} copies of {subset.source} records")
    columns = ("checked", "in step", "newer", "drifted", "orphaned", "fixed")
    figures = (
        report.checked,
        report.in_step,
        report.newer,
        report.drifted,
        report.orphaned,
        report.fixed,
    )
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*(str(n) for n in figures))
    console.print(table)
    for finding in report.findings[:show]:
        console.print(_line(subset, finding), markup=False)
    hidden = len(report.findings) - show
    if hidden > 0:
        console.print(f"... and {hidden} more (--json lists them all)", markup=False)
    if report.remaining:
        hint = "" if fix else "; --fix repairs drifted copies"
        console.print(f"{report.remaining} copies left drifted or orphaned{hint}", markup=False)
    elif report.fixed:
        console.print(f"every drifted copy fixed ({report.fixed})", markup=False)
    else:
        console.print("nothing drifted", markup=False)


def _line(subset: Subset, f: Finding) -> str:
    where = f"{subset.domain} {f.holder_id} / {subset.source} {f.source_id}"
    if f.field is None:
        but = ", but the copy is newer than the read" if f.status is Status.NEWER else ""
        return f"{where}: the source no longer holds this copy{but} [{f.status.value}]"
    return (
        f"{where}: {f.field}: copy {json.dumps(f.copy)} source {json.dumps(f.source)} "
        f"[{f.status.value}]"
    )
