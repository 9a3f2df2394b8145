"""Listener processes sharing one subscription on the embedded SQLite broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers import Broker, connect
from tidings.db import create_engine, create_tables
from tidings.events import Event
from tidings.testing import publish_events

from ._listener_proc import TOPOLOGY, effects, effects_metadata

SCRIPT = Path(__file__).with_name("_listener_proc.py")
pytestmark = pytest.mark.slow


class Procs:
    def __init__(self, broker_url: str, db_url: str) -> None:
        self.args = [broker_url, db_url]
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *self.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def urls(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path}/broker.db", f"sqlite:///{tmp_path}/domain.db"


@pytest.fixture
def procs(urls: tuple[str, str]) -> Iterator[Procs]:
    procs = Procs(*urls)
    yield procs
    procs.kill_all()


@pytest.fixture
async def broker(urls: tuple[str, str]) -> AsyncIterator[Broker]:
    broker = await connect(urls[0])
    await broker.declare(TOPOLOGY)
    yield broker
    await broker.close()


@pytest.fixture
async def engine(urls: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(urls[1])
    await create_tables(engine, effects_metadata)
    yield engine
    await engine.dispose()


def ticks(n: int) -> list[Event]:
    return [
        Event(
            event_type="Tick",
            source_domain="Clock",
            source_system="ClockAPI",
            entity_id=f"e{i % 50}",
            entity_version=i // 50 + 1,
        )
        for i in range(n)
    ]


async def effect_rows(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(effects.c.event_id, effects.c.pid))
        return [(r.event_id, r.pid) for r in rows]


async def wait_for_effects(engine: AsyncEngine, count: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            async with engine.connect() as conn:
                n = (await conn.execute(select(func.count()).select_from(effects))).scalar()
            if (n or 0) >= count:
                return
            await asyncio.sleep(0.05)


async def test_sigkill_of_one_listener_process_loses_and_duplicates_nothing(
    procs: Procs, broker: Broker, engine: AsyncEngine
) -> None:
    victim, survivor = procs.start(), procs.start()
    events = ticks(600)
    for i in range(0, len(events), 100):
        await publish_events(broker, "ticks", events[i : i + 100])
    await wait_for_effects(engine, 120, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    await wait_for_effects(engine, len(events), timeout=90)
    await asyncio.sleep(1.5)  # a late duplicate would show up within a lease
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=30) == 0

    rows = await effect_rows(engine)
    applied = [event_id for event_id, _ in rows]
    assert sorted(applied) == sorted(str(e.id) for e in events), "lost or duplicated effects"
    pids = {pid for _, pid in rows}
    assert pids == {victim.pid, survivor.pid}
    depth = await broker.depth("copy")
    assert depth.pending == 0 and depth.dead == 0


async def test_sigterm_stops_a_busy_listener_cleanly_and_the_rest_is_applied_later(
    procs: Procs, broker: Broker, engine: AsyncEngine
) -> None:
    first = procs.start()
    events = ticks(300)
    await publish_events(broker, "ticks", events)
    await wait_for_effects(engine, 50, timeout=60)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    procs.start()
    await wait_for_effects(engine, len(events), timeout=90)
    rows = await effect_rows(engine)
    assert sorted(e for e, _ in rows) == sorted(str(e.id) for e in events)
