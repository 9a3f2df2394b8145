"""``tidings subscriptions``, ``pause``, ``resume`` and ``throttle``: see every subscription
at a glance and steer it through the control store (see :mod:`tidings.control`).

A control is a row in the store; every listener of the subscription, in any process, reads
it each second and follows it, and reads it again when it starts. These commands only write
the row: they work while no listener runs, and what they set survives restarts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tidings.brokers import Broker, Depth, connect
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
from tidings.control import Controls, ControlStore, ListenerBeat
from tidings.errors import TidingsError, UnknownSubscription
from tidings.topology import Subscription

__all__ = [
    "console",
    "limits_in_force",
    "plain",
    "pause",
    "resume",
    "subscriptions",
    "throttle",
    "with_broker",
    "with_store",
]

T = TypeVar("T")

SubscriptionArgument = Annotated[str, typer.Argument(metavar="SUB", help="Subscription name.")]


def console() -> Console:
    """A console on the current stdout, wide enough for the tables when stdout is no
    terminal (a pipe or a file)."""
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = max(out.width, 160)
    return out


def plain(*values: str) -> list[Text]:
    """Table cells shown as they are: text from events or operators is never rich markup."""
    return [Text(value) for value in values]


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


async def with_store(url: str, work: Callable[[ControlStore], Awaitable[T]]) -> T:
    """``work`` run on the control store at ``url``; a database that cannot be reached or
    used becomes one :class:`TidingsError` naming the store."""
    opened = False
    try:
        async with ControlStore.open(url) as store:
            opened = True
            return await work(store)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise TidingsError(f"control store {_safe(url)}: {cause}") from None
    except OSError as exc:
        if opened:
            raise
        raise TidingsError(f"control store {_safe(url)}: {exc.strerror or exc}") from None


async def with_broker(url: str, work: Callable[[Broker], Awaitable[T]]) -> T:
    """``work`` run on the broker at ``url``, closed afterwards."""
    broker = await connect(url)
    try:
        return await work(broker)
    finally:
        await broker.close()


def limits_in_force(declared: Subscription, controls: Controls) -> dict[str, Any]:
    """What the listeners of a subscription follow: the operator's controls over the
    declared limits."""
    return {
        "paused": controls.paused,
        "in_flight": controls.in_flight or declared.in_flight,
        "rate": controls.rate if controls.rate is not None else declared.rate,
        "overridden": [
            name for name in ("in_flight", "rate") if getattr(controls, name) is not None
        ],
    }


def _rate(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{rate:g}/s"


# -- subscriptions ----------------------------------------------------------------------


async def _overview(store: ControlStore, broker_url: str) -> list[dict[str, Any]]:
    declared = await store.subscriptions()
    if not declared:
        return []
    controls = await store.all_controls()
    beats = await store.listeners()

    async def depth(broker: Broker, name: str) -> Depth | None:
        try:
            return await broker.depth(name)
        except UnknownSubscription:
            return None

    async def depths(broker: Broker) -> list[Depth | None]:
        return list(await asyncio.gather(*(depth(broker, s.name) for s in declared)))

    figures = await with_broker(broker_url, depths)
    return [
        _row(sub, d, controls.get(sub.name, Controls(sub.name)), beats)
        for sub, d in zip(declared, figures, strict=True)
    ]


def _row(
    sub: Subscription, depth: Depth | None, controls: Controls, beats: list[ListenerBeat]
) -> dict[str, Any]:
    mine = [b for b in beats if b.subscription == sub.name]
    return {
        "name": sub.name,
        "topics": list(sub.topics),
        "event_types": list(sub.event_types),
        "on_broker": depth is not None,
        "ready": None if depth is None else depth.ready,
        "in_flight": None if depth is None else depth.in_flight,
        "delayed": None if depth is None else depth.delayed,
        "dead_letters": None if depth is None else depth.dead,
        "per_second": round(float(sum(b.per_second for b in mine)), 3),
        "listeners": len(mine),
        "listeners_paused": sum(1 for b in mine if b.paused),
        "oldest_age_seconds": None,
        "limits": limits_in_force(sub, controls),
    }


def _state(paused: bool, listeners: int, following: int) -> str:
    """Paused or running, and how many listeners have yet to follow (they read their
    controls each second)."""
    state = "paused" if paused else "running"
    if following != (listeners if paused else 0):
        state += f" ({following}/{listeners} paused)"
    return state


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def subscriptions(
    broker: BrokerOption = DEFAULT_BROKER,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every declared subscription: depth, rate, dead letters, listeners, paused.

    Per subscription: topics, filter, depth (ready / in flight / delayed),
    processed per second and listeners alive (from the listeners' heartbeats of the last
    10 s), oldest message age, dead letters, paused or running (and how many listeners
    have followed), and the in-flight and rate limits in force (* = set by an operator,
    else as declared).

    Oldest message age is '-' (null in JSON): no broker reports it through the broker
    protocol yet."""
    rows: list[dict[str, Any]] = run(
        with_store(control_url(home, database_url), lambda store: _overview(store, broker))
    )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no subscriptions declared (tidings up or tidings topology apply declares them)")
        return
    table = Table()
    for column in ("subscription", "topics", "event types", "ready", "in flight", "delayed"):
        table.add_column(column, no_wrap=column not in ("topics", "event types"))
    for column in ("per s", "listeners", "oldest", "dead", "state", "in-flight limit", "rate"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        limits = row["limits"]
        marks = {
            name: "*" if name in limits["overridden"] else "" for name in ("in_flight", "rate")
        }
        table.add_row(
            *plain(
                row["name"],
                ", ".join(row["topics"]),
                ", ".join(row["event_types"]) or "all",
                _count(row["ready"]) if row["on_broker"] else "not on broker",
                _count(row["in_flight"]),
                _count(row["delayed"]),
                f"{row['per_second']:.1f}",
                str(row["listeners"]),
                "-",
                _count(row["dead_letters"]),
                _state(limits["paused"], row["listeners"], row["listeners_paused"]),
                f"{limits['in_flight']}{marks['in_flight']}",
                f"{_rate(limits['rate'])}{marks['rate']}",
            )
        )
    console().print(table)


# -- pause, resume, throttle ------------------------------------------------------------


async def _set(store: ControlStore, name: str, **changes: Any) -> dict[str, Any]:
    declared = await store.subscription(name)
    if declared is None:
        known = ", ".join(s.name for s in await store.subscriptions()) or "none declared"
        raise TidingsError(f"unknown subscription {name!r} (known: {known})")
    controls = await store.set_controls(name, **changes)
    return {"subscription": name, **limits_in_force(declared, controls)}


def _report(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(state))
        return
    overridden = state["overridden"]

    def origin(name: str) -> str:
        return "set" if name in overridden else "declared"

    typer.echo(
        f"{state['subscription']}: {'paused' if state['paused'] else 'running'}; "
        f"in flight {state['in_flight']} ({origin('in_flight')}), "
        f"rate {_rate(state['rate'])} ({origin('rate')})"
    )


def _steer(home: Path, database_url: str | None, name: str, **changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = run(
        with_store(control_url(home, database_url), lambda store: _set(store, name, **changes))
    )
    return state


def pause(
    subscription: SubscriptionArgument,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop SUB's listeners taking new events (those in hand finish); survives restarts."""
    _report(_steer(home, database_url, subscription, paused=True), as_json)


def resume(
    subscription: SubscriptionArgument,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let SUB's listeners take events again."""
    _report(_steer(home, database_url, subscription, paused=False), as_json)


def throttle(
    subscription: SubscriptionArgument,
    in_flight: Annotated[
        int | None,
        typer.Option("--in-flight", min=1, max=10_000, help="Unsettled events per listener."),
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.001, help="Events per second per listener.")
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Back to the declared limits (then apply any given).")
    ] = False,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set the in-flight and rate limits SUB's listeners follow, over the declared ones."""
    if in_flight is None and rate is None and not reset:
        raise fail("give --in-flight, --rate or --reset")
    changes: dict[str, Any] = {"in_flight": None, "rate": None} if reset else {}
    if in_flight is not None:
        changes["in_flight"] = in_flight
    if rate is not None:
        changes["rate"] = rate
    _report(_steer(home, database_url, subscription, **changes), as_json)
