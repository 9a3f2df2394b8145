"""``tidings trace CORRELATION_ID``: the whole story of one request across services, from the
trace records in the control store (see :class:`tidings.control.TraceRecord`)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table

from tidings.cli.ops import console, plain, with_store
from tidings.cli.output import (
    DEFAULT_HOME,
    DatabaseOption,
    HomeOption,
    JsonOption,
    control_url,
    run,
)
from tidings.control import TraceRecord

__all__ = ["summary", "trace"]


def summary(records: list[TraceRecord]) -> dict[str, Any]:
    """How many events a correlation id caused, which subscriptions they reached, and how
    often each outcome happened."""
    return {
        "events": len({r.event_id for r in records}),
        "subscriptions": sorted({r.subscription for r in records if r.subscription}),
        "outcomes": dict(sorted(Counter(r.outcome for r in records).items())),
    }


def _record(r: TraceRecord) -> dict[str, Any]:
    return {
        "at": r.at.isoformat(),
        "event_id": r.event_id,
        "event_type": r.event_type,
        "entity_id": r.entity_id,
        "where": r.topic if r.outcome == "published" else r.subscription,
        "topic": r.topic,
        "subscription": r.subscription,
        "outcome": r.outcome,
        "attempt": r.attempt,
        "detail": r.detail,
        "process": r.process,
    }


def trace(
    correlation_id: Annotated[str, typer.Argument(metavar="CORRELATION_ID")],
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """The whole story of one request: every event CORRELATION_ID caused.

    CORRELATION_ID is the x-correlation-id of a request. For each event: where it was
    published, which subscriptions received it, what each did with it (applied, stale,
    duplicate, unhandled, retried, dead_lettered) and when. Exit 1 when nothing is known of
    the id."""
    records: list[TraceRecord] = run(
        with_store(control_url(home, database_url), lambda store: store.trace(correlation_id))
    )
    if not records:
        typer.echo(f"tidings: nothing recorded for correlation id {correlation_id!r}", err=True)
        raise typer.Exit(1)
    totals = summary(records)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "correlation_id": correlation_id,
                    "records": [_record(r) for r in records],
                    **totals,
                }
            )
        )
        return
    table = Table("time", "event type", "entity", "where", "outcome", "attempt", "detail")
    for r in records:
        row = _record(r)
        table.add_row(
            *plain(
                r.at.strftime("%H:%M:%S.%f")[:-3],
                r.event_type,
                r.entity_id,
                row["where"] or "-",
                r.outcome,
                "-" if r.attempt is None else str(r.attempt),
                r.detail or "",
            )
        )
    out = console()
    out.print(f"trace of {correlation_id} (from {records[0].at.isoformat()})", markup=False)
    out.print(table)
    outcomes = ", ".join(f"{name} {count}" for name, count in totals["outcomes"].items())
    reached = ", ".join(totals["subscriptions"]) or "none"
    out.print(
        f"{totals['events']} event(s); subscriptions reached: {reached}; outcomes: {outcomes}",
        markup=False,
    )
