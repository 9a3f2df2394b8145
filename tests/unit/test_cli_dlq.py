from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from tidings.brokers import Message, connect
from tidings.cli import app
from tidings.topology import Subscription, Topology

runner = CliRunner()
TOPOLOGY = Topology.build(
    ["person"],
    [Subscription(name="copy", topics=("person",)), Subscription(name="other", topics=("person",))],
)


async def poison(url: str, count: int) -> None:
    broker = await connect(url)
    await broker.declare(TOPOLOGY)
    await broker.publish(
        "person",
        [
            Message(id=f"m{i}", event_type="PersonUpdatedEvent", key=f"p{i}", body=b'{"bad": true}')
            for i in range(count)
        ],
    )
    async with broker.consume("copy") as consumer:
        for _ in range(count):
            delivery = await consumer.__anext__()
            await delivery.dead_letter(f"schema violation in {delivery.message.id}")
    async with broker.consume("other") as consumer:
        for _ in range(count):
            await (await consumer.__anext__()).ack()
    await broker.close()


async def ready(url: str, subscription: str) -> int:
    broker = await connect(url)
    try:
        return (await broker.depth(subscription)).ready
    finally:
        await broker.close()


def test_dead_letters_are_listed_shown_redriven_and_purged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/broker.db"
    asyncio.run(poison(url, 3))

    listed = runner.invoke(app, ["dlq", "list", "copy", "--broker", url, "--json"])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    assert [d["messageId"] for d in letters] == ["m0", "m1", "m2"]
    assert letters[0]["reason"] == "schema violation in m0" and letters[0]["attempts"] == 1

    shown = runner.invoke(app, ["dlq", "show", "copy", letters[1]["id"], "--broker", url, "--json"])
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.output)
    assert detail["body"] == '{"bad": true}' and detail["eventType"] == "PersonUpdatedEvent"

    redriven = runner.invoke(
        app, ["dlq", "redrive", "copy", "--id", letters[0]["id"], "--broker", url]
    )
    assert redriven.exit_code == 0 and "1 dead letter(s) redriven" in redriven.output
    assert asyncio.run(ready(url, "copy")) == 1
    assert asyncio.run(ready(url, "other")) == 0, "a redrive reached another subscription"

    paced = runner.invoke(app, ["dlq", "redrive", "copy", "--all", "--rate", "50", "--broker", url])
    assert paced.exit_code == 0 and "2 dead letter(s) redriven" in paced.output
    assert asyncio.run(ready(url, "copy")) == 3

    asyncio.run(poison(url, 1))
    refused = runner.invoke(app, ["dlq", "purge", "copy", "--broker", url], input="n\n")
    assert refused.exit_code == 2
    purged = runner.invoke(app, ["dlq", "purge", "copy", "--yes", "--broker", url])
    assert purged.exit_code == 0 and "1 dead letter(s) purged" in purged.output


def test_dlq_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/broker.db"
    asyncio.run(poison(url, 1))
    for args in (
        ["dlq", "redrive", "copy", "--broker", url],
        ["dlq", "redrive", "copy", "--all", "--id", "1", "--broker", url],
        ["dlq", "show", "copy", "no-such-id", "--broker", url],
        ["dlq", "list", "nope", "--broker", url],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().count("\n") == 0, result.output
