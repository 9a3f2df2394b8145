"""Push subscriptions as operators and crashes see them: the ``tidings`` commands (pause,
resume, throttle, subscriptions, dead letters and redrive, trace) act on them as on any
subscription, and SIGKILL of a ``tidings push`` process loses no event."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings.brokers import Broker, connect
from tidings.cli.output import control_url
from tidings.control import ControlStore, Recorder
from tidings.push import PushDispatcher, new_secret
from tidings.testing import publish_events
from tidings.topology import Backoff, Subscription, Topology

from ..conftest import free_ports
from ._webhook_receiver import Receiver, Reply
from .test_push_dispatch import tenure_events, until

SECRET = new_secret()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver(free_ports()).start()
    yield endpoint
    endpoint.stop()


def cli(home: Path, *args: str) -> str:
    env = {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_BROKER": f"sqlite:///{home}/broker.db"}
    env.pop("TIDINGS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "tidings.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


async def ask(home: Path, *args: str) -> Any:
    return json.loads(await asyncio.to_thread(cli, home, *args, "--json"))


async def row(home: Path) -> dict[str, Any]:
    rows = await ask(home, "subscriptions")
    found: dict[str, Any] = next(r for r in rows if r["name"] == "hooks")
    return found


@pytest.fixture
async def running(
    tmp_path: Path, receiver: Receiver
) -> AsyncIterator[tuple[Path, Broker, Receiver]]:
    home = tmp_path
    sub = Subscription(
        name="hooks",
        topics=("tenure",),
        url=receiver.url,
        secret_env="HOOK_SECRET",
        timeout=2.0,
        backoff=Backoff(initial=0.05, maximum=0.1, jitter=0),
    )
    topology = Topology.build(["tenure"], [sub])
    broker = await connect(f"sqlite:///{home}/broker.db")
    async with ControlStore.open(control_url(home, None)) as store:
        await broker.declare(topology)
        await store.declared(topology)
        recorder = Recorder(store)
        recorder.start()
        dispatcher = PushDispatcher(
            [sub],
            broker=broker,
            environ={"HOOK_SECRET": SECRET},
            control=store,
            recorder=recorder,
            control_interval=0.2,
        )
        task = asyncio.create_task(dispatcher.run())
        try:
            yield home, broker, receiver
        finally:
            dispatcher.stop()
            await asyncio.wait_for(task, 15)
            await recorder.close()
            await broker.close()


async def test_pause_resume_and_throttle_act_on_a_push_subscription(
    running: tuple[Path, Broker, Receiver],
) -> None:
    home, broker, receiver = running
    cli(home, "pause", "hooks")
    await asyncio.sleep(0.6)
    await publish_events(broker, "tenure", tenure_events(5, 5))
    await asyncio.sleep(1.0)
    assert receiver.received == [], "a paused push subscription delivered"
    state = await row(home)
    assert state["ready"] == 5 and state["listeners"] == 1

    cli(home, "resume", "hooks")
    await until(lambda: len(receiver.received) == 5)

    cli(home, "throttle", "hooks", "--rate", "10")
    await asyncio.sleep(0.6)
    start = time.monotonic()
    await publish_events(broker, "tenure", tenure_events(20, 20, prefix="r"))
    await until(lambda: len(receiver.received) == 25)
    assert time.monotonic() - start >= 1.5, "the rate limit was not followed"


async def test_dead_letters_of_a_push_subscription_are_listed_redriven_and_traced(
    running: tuple[Path, Broker, Receiver],
) -> None:
    home, broker, receiver = running
    receiver.behaviour = lambda _: Reply(422, body=b'{"title": "unknown tenure"}')
    (event,) = tenure_events(1)
    await publish_events(broker, "tenure", [event])
    await until(lambda: _dead(broker))
    (letter,) = await ask(home, "dlq", "list", "hooks")
    assert "HTTP 422" in letter["reason"] and "unknown tenure" in letter["reason"]

    receiver.behaviour = lambda _: Reply(200)
    cli(home, "dlq", "redrive", "hooks", "--all")
    await until(lambda: len(receiver.received) == 2)
    await until(lambda: _dead(broker, 0))

    async def story() -> list[str]:
        trace = await ask(home, "trace", event.correlation_id)
        return [step["outcome"] for step in _steps(trace) if step.get("subscription") == "hooks"]

    deadline = time.monotonic() + 10
    while (outcomes := await story()) != ["dead_lettered", "applied"]:
        assert time.monotonic() < deadline, outcomes
        await asyncio.sleep(0.3)


def _steps(trace: Any) -> list[dict[str, Any]]:
    """Every step of a ``tidings trace --json`` answer, whatever its nesting."""
    found: list[dict[str, Any]] = []
    if isinstance(trace, dict):
        if "outcome" in trace:
            found.append(trace)
        for value in trace.values():
            found += _steps(value)
    elif isinstance(trace, list):
        for value in trace:
            found += _steps(value)
    return found


async def _dead(broker: Broker, count: int = 1) -> bool:
    return (await broker.depth("hooks")).dead == count


TOML = """
[topics.tenure]

[subscriptions.hooks]
topics = ["tenure"]
url = "{url}"
secret_env = "HOOK_SECRET"
timeout = 2.0
lease_seconds = 3.0
in_flight = 8
max_attempts = 50
backoff = {{ initial = 0.05, maximum = 0.2, jitter = 0 }}
"""


@pytest.mark.slow
async def test_sigkill_of_the_dispatcher_loses_no_event(tmp_path: Path) -> None:
    count = 300
    receiver = Receiver(free_ports(), lambda _: Reply(204, delay=0.01)).start()
    topology = tmp_path / "push.toml"
    topology.write_text(TOML.format(url=receiver.url))
    env = {
        **os.environ,
        "HOOK_SECRET": SECRET,
        "TIDINGS_HOME": str(tmp_path),
        "TIDINGS_BROKER": f"sqlite:///{tmp_path}/broker.db",
        "TIDINGS_LOG_LEVEL": "WARNING",
    }
    env.pop("TIDINGS_DATABASE_URL", None)

    def dispatcher() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "tidings.cli", "push", "--topology", str(topology)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    broker = await connect(f"sqlite:///{tmp_path}/broker.db")
    await broker.declare(Topology.from_toml(topology))
    first = dispatcher()
    try:
        events = tenure_events(count, 10)
        await publish_events(broker, "tenure", events)
        await until(lambda: len(receiver.received) >= count // 5, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(set(receiver.ids())) < count, "everything was delivered before the kill"
        second = dispatcher()
        try:
            await until(lambda: len(set(receiver.ids())) == count, timeout=60)
            depth = await broker.depth("hooks")
            assert depth.dead == 0
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        assert set(receiver.ids()) == {str(e.id) for e in events}
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        await broker.close()
        receiver.stop()
