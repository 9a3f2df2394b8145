"""``tidings replay``: send archived events from a publisher's outbox to one subscription.

The outbox keeps published rows for its relay's ``retention`` (see
:mod:`tidings.outbox.relay`); replay reads them in ``seq`` order (the order they were
written), builds each message exactly as the relay published it, and hands them to the one
subscription with :meth:`Broker.deliver <tidings.brokers.base.Broker.deliver>`: no other
subscription sees them. A replay is safe to repeat: an event keeps its id, and a listener's
inbox drops an event it already applied.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers import Broker, Message, connect
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
from tidings.config import Settings
from tidings.control import ControlStore
from tidings.db import create_engine
from tidings.outbox.table import outbox_table as t

__all__ = ["Outcome", "Selection", "archived", "message", "replay", "replay_command"]

BATCH = 500


@dataclass(frozen=True, slots=True)
class Selection:
    """Which archived events of one topic to replay."""

    topic: str
    since: datetime | None = None
    until: datetime | None = None
    event_types: tuple[str, ...] = ()
    entity: str | None = None

    def where(self) -> ColumnElement[bool]:
        """Published rows of the topic that match every filter given. ``since`` and
        ``until`` bound when the event was written to the outbox (inclusive, exclusive)."""
        terms = [t.c.topic == self.topic, t.c.published_at.is_not(None)]
        if self.since is not None:
            terms.append(t.c.created_at >= self.since)
        if self.until is not None:
            terms.append(t.c.created_at < self.until)
        if self.event_types:
            terms.append(t.c.event_type.in_(self.event_types))
        if self.entity is not None:
            terms.append(t.c.entity_id == self.entity)
        return and_(*terms)


def message(row: Any) -> Message:
    """The message the relay published for an outbox row."""
    return Message(
        id=row.event_id,
        event_type=row.event_type,
        key=row.entity_id,
        body=bytes(row.body),
        headers=dict(row.headers or {}),
    )


async def count(engine: AsyncEngine, selection: Selection) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(select(func.count()).select_from(t).where(selection.where()))
    return int(found or 0)


async def archived(
    engine: AsyncEngine, selection: Selection, batch: int = BATCH
) -> AsyncIterator[list[Message]]:
    """The selected events in outbox order, ``batch`` at a time (a short read each)."""
    after = 0
    columns = (t.c.seq, t.c.event_id, t.c.event_type, t.c.entity_id, t.c.body, t.c.headers)
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*columns)
                    .where(selection.where(), t.c.seq > after)
                    .order_by(t.c.seq)
                    .limit(batch)
                )
            ).all()
        if not rows:
            return
        after = rows[-1].seq
        yield [message(row) for row in rows]


async def _check_subscription(home: Path, database_url: str | None, name: str, topic: str) -> None:
    """Refuse a subscription that the deployment declared without ``topic``. Subscriptions
    the control store does not know are left to the broker to judge."""
    url = control_url(home, database_url)
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        return
    async with ControlStore.open(url) as store:
        declared = await store.subscription(name)
    if declared is not None and topic not in declared.topics:
        reads = ", ".join(declared.topics)
        raise fail(f"subscription {name} does not take topic {topic} (it reads: {reads})")


@dataclass(frozen=True, slots=True)
class Outcome:
    matched: int
    replayed: int


async def replay(
    engine: AsyncEngine,
    broker: Broker,
    selection: Selection,
    subscription: str,
    *,
    rate: float | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Deliver the selected events to ``subscription``, at most ``rate`` per second."""
    await broker.deliver(subscription, [], topic=selection.topic)  # unknown: raises now
    matched = await count(engine, selection)
    task = progress.add_task(f"replay to {subscription}", total=matched) if progress else None
    batch = BATCH if rate is None else max(1, min(BATCH, int(rate)))
    started, sent, replayed = time.monotonic(), 0, 0
    async for messages in archived(engine, selection, batch):
        replayed += await broker.deliver(subscription, messages, topic=selection.topic)
        sent += len(messages)
        if progress is not None and task is not None:
            progress.update(task, completed=sent)
        if rate is not None:
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
    return Outcome(matched=max(matched, sent), replayed=replayed)


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r}: expected an ISO 8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def replay_command(
    topic: Annotated[str, typer.Option("--topic", help="Topic the events were published to.")],
    to: Annotated[str, typer.Option("--to", help="The one subscription that receives them.")],
    since: Annotated[
        str | None, typer.Option(help="Events written at or after this ISO time (UTC if bare).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Events written before this ISO time.")] = None,
    event_types: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type; repeatable.")
    ] = None,
    entity: Annotated[str | None, typer.Option(help="Only events of this entity id.")] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Events per second at most.")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Database URL of the publisher's outbox.")
    ] = None,
    domain: Annotated[
        str | None, typer.Option("--domain", help="The deployment's domain that published them.")
    ] = None,
    home: HomeOption = DEFAULT_HOME,
    database_url: DatabaseOption = None,
    broker: BrokerOption = DEFAULT_BROKER,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, deliver nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-deliver archived events of a topic to one subscription only.

    Reads the publisher's outbox archive (published rows it keeps) and hands the events of
    --topic to --to alone, in the order they were written. Safe to repeat: listeners drop
    what they applied."""
    if (source is None) == (domain is None):
        raise fail("give either --source DATABASE_URL or --domain NAME")
    selection = Selection(
        topic=topic,
        since=_moment(since, "--since"),
        until=_moment(until, "--until"),
        event_types=tuple(event_types or ()),
        entity=entity,
    )
    url = source or Settings(home, broker, database_url).domain_database_url(domain or "")
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        raise fail(f"no outbox database at {url}")
    outcome = run(_replay(url, broker, selection, to, home, database_url, rate, dry_run, as_json))
    if as_json:
        figures = {"matched": outcome.matched, "replayed": outcome.replayed, "dryRun": dry_run}
        typer.echo(json.dumps({"topic": topic, "subscription": to, **figures}))
    elif dry_run:
        typer.echo(f"would replay {outcome.matched} events of {topic} to {to}")
    else:
        typer.echo(f"replayed {outcome.replayed} events of {outcome.matched} matched to {to}")


async def _replay(
    url: str,
    broker_url: str,
    selection: Selection,
    subscription: str,
    home: Path,
    database_url: str | None,
    rate: float | None,
    dry_run: bool,
    quiet: bool,
) -> Outcome:
    await _check_subscription(home, database_url, subscription, selection.topic)
    engine = create_engine(url)
    try:
        if dry_run:
            return Outcome(matched=await count(engine, selection), replayed=0)
        broker = await connect(broker_url)
        try:
            with _progress(quiet) as progress:
                return await replay(
                    engine, broker, selection, subscription, rate=rate, progress=progress
                )
        finally:
            await broker.close()
    finally:
        await engine.dispose()


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    )
