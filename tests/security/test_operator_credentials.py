"""The operator's credential for the ``tidings`` command is access to the broker, as for
``rabbitmqctl``: with a wrong broker password every mutating command (publish, redrive,
purge) is refused by the broker with one line on stderr and changes nothing; with the right
one it acts. (The dashboard's actions need the operator group: tests/e2e/test_dashboard.py.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.brokers import connect
from tidings.cli import app as cli
from tidings.events import Event, EventData
from tidings.events.codecs import encode
from tidings.testing import publish_events
from tidings.topology import Subscription, Topology

from ..conftest import require_service

pytestmark = pytest.mark.rabbitmq

WRONG = "Wr0ngPassw0rd-5d1e"
SUB = Subscription(name="tenure-listener", topics=("person",))


def event() -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id="p-1",
        entity_version=1,
        event_data=EventData(new_data={"firstName": "Ann"}),
    )


async def _ready(url: str) -> int:
    broker = await connect(url)
    try:
        return (await broker.depth(SUB.name)).ready
    finally:
        await broker.close()


async def _prepare(url: str) -> None:
    broker = await connect(url)
    try:
        await broker.declare(Topology.build(["person"], [SUB]))
        await publish_events(broker, "person", [event()])
    finally:
        await broker.close()


async def _delete(url: str) -> None:
    broker = await connect(url)
    try:
        await broker.delete_namespace()  # type: ignore[attr-defined]
    finally:
        await broker.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    require_service("rabbitmq", "127.0.0.1", 5672)
    name = f"sec-{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(_delete(f"amqp://guest:guest@127.0.0.1:5672/?namespace={name}"))


def test_mutating_commands_need_the_broker_credential(namespace: str, tmp_path: Path) -> None:
    good = f"amqp://guest:guest@127.0.0.1:5672/?namespace={namespace}"
    wrong = f"amqp://guest:{WRONG}@127.0.0.1:5672/?namespace={namespace}"
    asyncio.run(_prepare(good))
    assert asyncio.run(_ready(good)) == 1
    body = tmp_path / "event.json"
    body.write_bytes(encode(event()))
    runner = CliRunner()
    commands = [
        ["publish", "--topic", "person", "--file", str(body)],
        ["dlq", "redrive", SUB.name, "--all"],
        ["dlq", "purge", SUB.name, "--yes"],
        ["depth", SUB.name],
    ]
    for args in commands:
        result = runner.invoke(cli, [*args, "--broker", wrong])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("tidings: ") and result.output.count("\n") == 1
        assert "ACCESS_REFUSED" in result.output
        assert WRONG not in result.output
    assert asyncio.run(_ready(good)) == 1

    published = runner.invoke(cli, [*commands[0], "--broker", good])
    assert published.exit_code == 0, published.output
    assert asyncio.run(_ready(good)) == 2
