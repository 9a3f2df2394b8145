"""What every case of ``bench.py`` shares: the backends a case runs on (each with a namespace
and a PostgreSQL schema of its own, removed afterwards), the events sent, quantiles, and the
results a case hands back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidings.brokers import Broker, connect
from tidings.events import Event, EventData
from tidings.testing import event_message

HERE = Path(__file__).resolve().parent
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
SERVICES = {
    "amqp": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
    "postgres": ("127.0.0.1", 5432),
}
BACKENDS = ("amqp", "nats", "sqlite")
DATABASE = {"amqp": "PostgreSQL", "nats": "PostgreSQL", "sqlite": "SQLite"}
BROKER = {"amqp": "RabbitMQ", "nats": "NATS JetStream", "sqlite": "SQLite (embedded)"}


def reachable(service: str) -> bool:
    host, port = SERVICES[service]
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def available(backend: str) -> str | None:
    """None when ``backend`` can run here, else why not."""
    if backend == "sqlite":
        return None
    for service in (backend, "postgres"):
        if not reachable(service):
            return f"{service} is not reachable on {SERVICES[service][0]}:{SERVICES[service][1]}"
    return None


@dataclass
class Place:
    """Where one case runs on one backend: a broker namespace and a database of its own."""

    backend: str
    name: str
    folder: Path
    options: str = ""
    """More broker URL options, e.g. ``&queue_type=classic``."""

    @property
    def broker_url(self) -> str:
        if self.backend == "amqp":
            return f"{AMQP_URL}?namespace={self.namespace}{self.options}"
        if self.backend == "nats":
            return f"{NATS_URL}/?namespace={self.namespace}{self.options}"
        return f"sqlite:///{self.folder}/broker.db"

    @property
    def namespace(self) -> str:
        return self.name.replace("_", "-")

    @property
    def database_url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder}/domain.db"
        return f"{PG_URL}?schema={self.name}"

    async def broker(self) -> Broker:
        return await connect(self.broker_url)


@contextlib.asynccontextmanager
async def place(backend: str, case: str) -> AsyncIterator[Place]:
    """A fresh namespace and schema (or folder) for ``case`` on ``backend``; deleted after."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{case}-"))
    here = Place(backend, f"bench_{case}_{uuid.uuid4().hex[:8]}", folder)
    try:
        yield here
    finally:
        await forget(here)
        shutil.rmtree(folder, ignore_errors=True)


async def forget(here: Place) -> None:
    """Delete the broker namespace and every PostgreSQL schema named after ``here``."""
    if here.backend == "sqlite":
        return
    try:
        broker: Any = await connect(here.broker_url)
        try:
            await broker.delete_namespace()
        finally:
            await broker.close()
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        print(f"could not delete namespace {here.namespace}: {exc}", file=sys.stderr)
    await drop_schemas(here.name)


async def drop_schemas(prefix: str) -> None:
    """Drop every PostgreSQL schema whose name starts with ``prefix`` (a deployment makes one
    per domain: ``prefix_person``, ``prefix_tidings``, ...)."""
    import asyncpg

    connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        names = await connection.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", prefix
        )
        for (name,) in names:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


def person_events(count: int, prefix: str = "") -> list[Event]:
    return [
        Event(
            event_type="PersonUpdatedEvent",
            source_domain="Person",
            source_system="PersonAPI",
            entity_id=f"person-{prefix}{i % 1000}",
            entity_version=i // 1000 + 1,
            event_data=EventData(old_data={"surname": "Old"}, new_data={"surname": f"New{i}"}),
        )
        for i in range(count)
    ]


async def publish_events(broker: Broker, topic: str, count: int, batch: int = 500) -> None:
    messages = [event_message(e) for e in person_events(count)]
    for i in range(0, count, batch):
        await broker.publish(topic, messages[i : i + batch])


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (inclusive method); nan when empty."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, round(q * 100) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def until(check: Callable[[], bool], timeout: float, step: float = 0.002) -> None:
    """Wait until ``check()`` holds; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(step)


async def timed(work: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


@dataclass
class Row:
    """One line of the table: a case, a backend, what was measured, and the figure."""

    case: str
    backend: str
    what: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(
        self, case: str, backend: str, what: str, value: float, unit: str, note: str = ""
    ) -> None:
        self.rows.append(Row(case, backend, what, value, unit, note))
        print(f"  {case:<10} {backend:<7} {what:<52} {value:>10.2f} {unit} {note}", flush=True)

    def entry(self, name: str, backend: str, value: float, target: str, **figures: Any) -> None:
        """A named target figure for ``latest.json``."""
        self.entries[name] = {
            "broker": BROKER.get(backend, backend),
            "database": DATABASE.get(backend, ""),
            "value": round(value, 3),
            "target": target,
            "figures": figures,
        }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GB RAM"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}"
    )
