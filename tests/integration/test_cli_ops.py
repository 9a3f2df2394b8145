"""The operator commands as an operator runs them (``python -m tidings.cli`` in a subprocess)
on RabbitMQ, with the control store on PostgreSQL: topology apply, subscriptions, throttle
and the whole dead-letter round trip."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tidings.brokers import Message, connect
from tidings.db import create_engine

from ..conftest import require_service

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

PG = "postgresql://postgres@127.0.0.1:5432/test"

TOML = """
[topics.person]

[subscriptions.copy]
topics = ["person"]
event_types = ["PersonUpdatedEvent"]
in_flight = 4

[subscriptions.other]
topics = ["person"]
"""


@dataclass
class Operator:
    broker: str
    database_url: str
    home: Path

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidings.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
            env={
                **os.environ,
                "TIDINGS_BROKER": self.broker,
                "TIDINGS_DATABASE_URL": self.database_url,
                "TIDINGS_HOME": str(self.home),
            },
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


async def _forget(broker_url: str, prefix: str) -> None:
    broker: Any = await connect(broker_url)
    try:
        await broker.delete_namespace()
    finally:
        await broker.close()
    engine = create_engine(PG)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}_tidings" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Operator]:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    prefix = f"ops_{uuid.uuid4().hex[:10]}"
    broker = f"amqp://guest:guest@127.0.0.1:5672/?namespace={prefix.replace('_', '-')}"
    who = Operator(broker, f"{PG}?schema={prefix}", tmp_path)
    (tmp_path / "topology.toml").write_text(TOML)
    try:
        yield who
    finally:
        asyncio.run(_forget(broker, prefix))


async def _poison(url: str, count: int) -> None:
    broker = await connect(url)
    try:
        await broker.publish(
            "person",
            [
                Message(id=f"m{i}", event_type="PersonUpdatedEvent", key=f"p{i}", body=b"{}")
                for i in range(count)
            ],
        )
        async with broker.consume("copy", prefetch=count) as consumer:
            for _ in range(count):
                delivery = await consumer.__anext__()
                await delivery.dead_letter(f"cannot apply {delivery.message.id}")
    finally:
        await broker.close()


def test_operator_sees_and_steers_subscriptions_on_rabbitmq(operator: Operator) -> None:
    applied = operator.ok("topology", "apply", str(operator.home / "topology.toml"))
    assert "new        copy" in applied and "new        other" in applied
    again = operator.ok("topology", "apply", str(operator.home / "topology.toml"))
    assert "unchanged  copy" in again and "unchanged  other" in again

    shown = operator.json("topology", "show")["subscriptions"]
    assert [(s["name"], s["on_broker"]) for s in shown] == [("copy", True), ("other", True)]

    asyncio.run(_poison(operator.broker, 3))
    rows = {r["name"]: r for r in operator.json("subscriptions")}
    assert rows["copy"]["dead_letters"] == 3 and rows["copy"]["ready"] == 0
    assert rows["other"]["ready"] == 3 and rows["other"]["dead_letters"] == 0

    throttled = operator.json("throttle", "copy", "--in-flight", "2", "--rate", "10")
    assert (throttled["in_flight"], throttled["rate"]) == (2, 10.0)
    operator.ok("pause", "copy")
    rows = {r["name"]: r for r in operator.json("subscriptions")}
    assert rows["copy"]["limits"] == {
        "paused": True,
        "in_flight": 2,
        "rate": 10.0,
        "overridden": ["in_flight", "rate"],
    }
    refused = operator.run("pause", "nope")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1


def test_dead_letters_are_listed_shown_redriven_at_a_rate_and_purged_on_rabbitmq(
    operator: Operator,
) -> None:
    operator.ok("topology", "apply", str(operator.home / "topology.toml"))
    asyncio.run(_poison(operator.broker, 6))

    letters = operator.json("dlq", "list", "copy")
    assert [d["messageId"] for d in letters] == [f"m{i}" for i in range(6)]
    assert letters[2]["reason"] == "cannot apply m2" and letters[2]["attempts"] == 1

    shown = operator.ok("dlq", "show", "copy", letters[2]["id"])
    assert "reason:        cannot apply m2" in shown and "last failure:" in shown
    assert operator.json("dlq", "show", "copy", letters[2]["id"])["messageId"] == "m2"

    one = operator.json("dlq", "redrive", "copy", "--id", letters[0]["id"])
    assert one == {"subscription": "copy", "redriven": 1}
    started = time.monotonic()
    paced = operator.json("dlq", "redrive", "copy", "--all", "--rate", "4")
    elapsed = time.monotonic() - started
    assert paced == {"subscription": "copy", "redriven": 5}
    assert elapsed >= 1.0, f"5 dead letters at 4/s were redriven in {elapsed:.2f}s"
    rows = {r["name"]: r for r in operator.json("subscriptions")}
    assert (rows["copy"]["ready"], rows["copy"]["dead_letters"]) == (6, 0)
    assert rows["other"]["ready"] == 6, "a redrive reached another subscription"

    asyncio.run(_poison_again(operator.broker))
    declined = operator.run("dlq", "purge", "copy", input="n\n")
    assert declined.returncode == 2
    assert operator.json("dlq", "list", "copy") != []
    purged = operator.json("dlq", "purge", "copy", "--yes")
    assert purged["purged"] >= 1 and operator.json("dlq", "list", "copy") == []


async def _poison_again(url: str) -> None:
    broker = await connect(url)
    try:
        async with broker.consume("copy", prefetch=1) as consumer:
            delivery = await consumer.__anext__()
            await delivery.dead_letter("still broken")
    finally:
        await broker.close()


def test_unreachable_rabbitmq_and_postgres_are_one_line_each(tmp_path: Path) -> None:
    down = Operator(
        "amqp://guest:guest@127.0.0.1:1/", "postgresql://postgres@127.0.0.1:1/x", tmp_path
    )
    for args in (["subscriptions"], ["dlq", "list", "copy"], ["pause", "copy"], ["trace", "c"]):
        result = down.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
    alive_store = Operator(
        "amqp://guest:guest@127.0.0.1:1/", f"sqlite:///{tmp_path}/x.db", tmp_path
    )
    result = alive_store.run("dlq", "list", "copy")
    assert "RabbitMQ unavailable" in result.stderr and result.stderr.count("\n") == 1
