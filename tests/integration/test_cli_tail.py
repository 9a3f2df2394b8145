"""``tidings events tail`` as a process: it follows a topic live and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tidings import Event, Subscription, Topology, connect
from tidings.brokers import Broker
from tidings.testing import publish_events

from ..conftest import require_service

TOPOLOGY = Topology.build(["person"], [Subscription(name="work", topics=("person",))])


def person_event(entity: str, version: int) -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id=entity,
        entity_version=version,
        correlation_id=f"corr-{entity}-{version}",
    )


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
async def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "nats":
        require_service("NATS", "127.0.0.1", 4222)
        url = f"nats://127.0.0.1:4222/?namespace=tail{uuid.uuid4().hex[:10]}"
    else:
        url = f"sqlite:///{tmp_path}/broker.db"
    broker = await connect(url)
    await broker.declare(TOPOLOGY)
    await broker.close()
    yield url
    broker = await connect(url)
    delete = getattr(broker, "delete_namespace", None)
    if delete is not None:
        await delete()
    await broker.close()


async def _start(url: str, *args: str) -> asyncio.subprocess.Process:
    """A tail process, once it says it follows the topic."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings.cli", "events", "tail", "--topic", "person",
        "--broker", url, *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    async with asyncio.timeout(30):
        line = await process.stderr.readline()
    assert line.decode().startswith("following person"), line
    return process


async def _publish(url: str, events: list[Event]) -> None:
    broker: Broker = await connect(url)
    try:
        await publish_events(broker, "person", events)
    finally:
        await broker.close()


async def test_tail_prints_events_published_after_it_started(broker_url: str) -> None:
    await _publish(broker_url, [person_event("before", 1)])
    process = await _start(broker_url, "--count", "3", "--json")
    events = [person_event(f"p{i}", i + 1) for i in range(4)]

    await _publish(broker_url, events)
    async with asyncio.timeout(30):
        out, err = await process.communicate()

    assert process.returncode == 0, err.decode()
    printed = [json.loads(line) for line in out.decode().splitlines()]
    assert [(p["id"], p["entityId"], p["entityVersion"], p["correlationId"]) for p in printed] == [
        (str(e.id), e.entity_id, e.entity_version, e.correlation_id) for e in events[:3]
    ]


async def test_raw_tail_prints_the_wire_body_and_stops_on_ctrl_c(broker_url: str) -> None:
    process = await _start(broker_url, "--raw")
    event = person_event("p1", 7)

    await _publish(broker_url, [event])
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        _, err = await process.communicate()

    wire = json.loads(line)
    assert (wire["id"], wire["subject"], wire["specversion"]) == (str(event.id), "p1", "1.0")
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert await _tails_left(broker_url) == 0


async def _tails_left(url: str) -> int:
    """Taps (sqlite) or consumers other than the subscription's (NATS) on the topic."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM taps").fetchone()[0])
    broker: Any = await connect(url)
    try:
        info = await broker._core.api.stream_info(broker._core.names.topic_stream("person"))
    finally:
        await broker.close()
    return int(info["state"]["consumer_count"]) - 1
