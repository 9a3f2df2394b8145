"""``tidings dlq``: see, redrive and purge a subscription's dead letters."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from tidings.brokers import Broker, DeadLetter, connect
from tidings.cli.output import DEFAULT_BROKER, BrokerOption, JsonOption, fail, run

__all__ = ["dlq_app", "paced_redrive"]

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters of a subscription.")

Subscription = Annotated[str, typer.Argument(help="Subscription name.")]
Limit = Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")]

_PAGE = 10_000


def _describe(dead: DeadLetter, *, body: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": dead.id,
        "messageId": dead.message.id,
        "topic": dead.topic,
        "eventType": dead.message.event_type,
        "key": dead.message.key,
        "reason": dead.reason,
        "attempts": dead.attempts,
        "firstFailedAt": dead.first_failed_at.isoformat() if dead.first_failed_at else None,
        "lastFailedAt": dead.last_failed_at.isoformat(),
    }
    if body:
        entry["headers"] = dict(dead.message.headers)
        entry["body"] = dead.message.body.decode("utf-8", errors="replace")
    return entry


async def _with_broker(url: str, work: Any) -> Any:
    broker = await connect(url)
    try:
        return await work(broker)
    finally:
        await broker.close()


@dlq_app.command("list")
def dlq_list(
    subscription: Subscription,
    broker: BrokerOption = DEFAULT_BROKER,
    limit: Limit = 100,
    as_json: JsonOption = False,
) -> None:
    """The oldest dead letters of SUBSCRIPTION: id, event, reason, attempts."""

    async def work(b: Broker) -> list[DeadLetter]:
        return await b.dead_letters(subscription, limit=limit)

    letters: list[DeadLetter] = run(_with_broker(broker, work))
    if as_json:
        typer.echo(json.dumps([_describe(d) for d in letters]))
        return
    if not letters:
        typer.echo(f"{subscription}: no dead letters")
    for d in letters:
        typer.echo(f"{d.id}\t{d.message.event_type}\t{d.message.key}\t{d.attempts}\t{d.reason}")


@dlq_app.command("show")
def dlq_show(
    subscription: Subscription,
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="Dead-letter id.")],
    broker: BrokerOption = DEFAULT_BROKER,
    as_json: JsonOption = False,
) -> None:
    """One dead letter in full: the event, the reason, attempts, first and last failure."""

    async def work(b: Broker) -> list[DeadLetter]:
        return await b.dead_letters(subscription, limit=10_000)

    letters: list[DeadLetter] = run(_with_broker(broker, work))
    found = [d for d in letters if d.id == dead_letter_id]
    if not found:
        raise fail(f"{subscription}: no dead letter {dead_letter_id!r}")
    entry = _describe(found[0], body=True)
    if as_json:
        typer.echo(json.dumps(entry))
        return
    for key in ("id", "messageId", "topic", "eventType", "key", "reason", "attempts"):
        typer.echo(f"{key + ':':<15}{entry[key]}")
    typer.echo(f"{'first failure:':<15}{entry['firstFailedAt'] or 'unknown'}")
    typer.echo(f"{'last failure:':<15}{entry['lastFailedAt']}")
    for name, value in sorted(entry["headers"].items()):
        typer.echo(f"{'header:':<15}{name}={value}")
    typer.echo("event:")
    try:
        typer.echo(json.dumps(json.loads(entry["body"]), indent=2))
    except ValueError:
        typer.echo(entry["body"])


async def _every_id(broker: Broker, subscription: str) -> list[str]:
    """The ids of every dead letter now, oldest first, page by page; a letter that comes
    back while paging is not taken twice."""
    seen: dict[str, None] = {}
    while True:
        page = [d.id for d in await broker.dead_letters(subscription, limit=_PAGE)]
        fresh = [i for i in page if i not in seen]
        seen.update(dict.fromkeys(fresh))
        if len(page) < _PAGE or not fresh:
            return list(seen)


async def paced_redrive(
    broker: Broker, subscription: str, ids: Sequence[str] | None, rate: float
) -> int:
    """Redrive ``ids`` (or every dead letter) at about ``rate`` per second: in groups of
    about a tenth of a second's worth, each group sent when its time comes."""
    chosen = list(ids) if ids else await _every_id(broker, subscription)
    group = max(1, math.ceil(rate / 10))
    loop = asyncio.get_running_loop()
    start = loop.time()
    moved = 0
    for first in range(0, len(chosen), group):
        delay = start + first / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        moved += await broker.redrive(subscription, chosen[first : first + group])
    return moved


@dlq_app.command("redrive")
def dlq_redrive(
    subscription: Subscription,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Dead-letter id; repeatable.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Dead letters per second at most.")
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    as_json: JsonOption = False,
) -> None:
    """Send dead letters back to SUBSCRIPTION (only to it), attempts counted from 1 again."""
    if bool(ids) == all_:
        raise fail("give either --id (one or more) or --all")

    async def work(b: Broker) -> int:
        if rate is None:
            return await b.redrive(subscription, ids or None)
        return await paced_redrive(b, subscription, ids, rate)

    moved: int = run(_with_broker(broker, work))
    if as_json:
        typer.echo(json.dumps({"subscription": subscription, "redriven": moved}))
    else:
        typer.echo(f"{subscription}: {moved} dead letter(s) redriven")
    if ids and moved < len(ids):
        raise fail(f"{subscription}: {len(ids) - moved} of the given ids were not dead letters")


@dlq_app.command("purge")
def dlq_purge(
    subscription: Subscription,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    broker: BrokerOption = DEFAULT_BROKER,
    as_json: JsonOption = False,
) -> None:
    """Delete every dead letter of SUBSCRIPTION (asks first unless --yes)."""
    if not yes and not typer.confirm(f"delete every dead letter of {subscription}?"):
        raise fail("nothing purged")

    async def work(b: Broker) -> int:
        return await b.purge(subscription)

    purged: int = run(_with_broker(broker, work))
    if as_json:
        typer.echo(json.dumps({"subscription": subscription, "purged": purged}))
    else:
        typer.echo(f"{subscription}: {purged} dead letter(s) purged")
