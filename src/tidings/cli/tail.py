"""``tidings events tail``: follow a topic live, one line per event."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tidings.brokers import Message, connect
from tidings.cli.output import DEFAULT_BROKER, BrokerOption, JsonOption, fail, run
from tidings.errors import TidingsError
from tidings.events import decode

__all__ = ["events_app", "line"]

events_app = typer.Typer(no_args_is_help=True, help="Events on the wire.")


def line(message: Message, *, raw: bool, as_json: bool) -> str:
    """How ``tail`` prints one message: the decoded event's time, type, entity, version and
    correlation id (a note when it cannot be decoded), or with ``raw`` the wire body."""
    body = message.body.decode("utf-8", errors="replace")
    if raw:
        if as_json:
            return json.dumps({"id": message.id, "eventType": message.event_type, "body": body})
        return body
    try:
        event = decode(message.body)
    except TidingsError as exc:
        if as_json:
            return json.dumps(
                {"id": message.id, "eventType": message.event_type, "error": str(exc)}
            )
        return f"? {message.event_type} {message.key} (message {message.id}: {exc})"
    fields: dict[str, Any] = {
        "dateTime": event.date_time.isoformat(),
        "eventType": event.event_type,
        "entityId": event.entity_id,
        "entityVersion": event.entity_version,
        "correlationId": event.correlation_id,
        "id": str(event.id),
    }
    if as_json:
        return json.dumps(fields)
    version = "-" if event.entity_version is None else f"v{event.entity_version}"
    return (
        f"{fields['dateTime']}  {event.event_type}  {event.entity_id}  {version}  "
        f"{event.correlation_id}"
    )


@events_app.command("tail")
def tail(
    topic: Annotated[str, typer.Option("--topic", help="Topic to follow.")],
    raw: Annotated[bool, typer.Option("--raw", help="Print the wire message body.")] = False,
    event_types: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type; repeatable.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many events.")
    ] = None,
    broker: BrokerOption = DEFAULT_BROKER,
    as_json: JsonOption = False,
) -> None:
    """Follow TOPIC live from now on, one line per event, until Ctrl-C (or --count).
    Takes nothing from any subscription."""
    wanted = frozenset(event_types or ())

    async def follow() -> int:
        shown = 0
        b = await connect(broker)
        try:
            async with b.tail(topic) as messages:
                typer.echo(f"following {topic} (Ctrl-C stops)", err=True)
                async for message in messages:
                    if wanted and message.event_type not in wanted:
                        continue
                    typer.echo(line(message, raw=raw, as_json=as_json))
                    shown += 1
                    if count is not None and shown >= count:
                        break
        finally:
            await b.close()
        return shown

    try:
        shown = run(follow())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if count is None or shown < count:
        raise fail(f"the tail of {topic} ended: the broker closed it")
