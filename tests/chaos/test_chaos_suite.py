"""The chaos suite: the reference deployment (``tidings up --instances 2``) under a steady
stream of creates and updates while a fault schedule runs, on the embedded default,
RabbitMQ + PostgreSQL and NATS + PostgreSQL:

* SIGKILL of a random API instance (its relay dies with it) and of a random listener
  instance, again and again (the supervisor restarts them): on the embedded default this
  is also the database-side fault, a process killed in the middle of its SQLite commits;
* a restart of the test's own broker server (a RabbitMQ node killed with SIGKILL; a NATS
  server stopped with SIGTERM, as a single node acknowledges before fsync) and of the
  test's own PostgreSQL cluster (stopped as a crash, recovered from its WAL);
* the activity-listener paused with ``tidings pause`` for a while, then resumed;
* poison: undecodable bytes, a schema violation, an event whose handler always fails, and
  an event of an unknown type (see :func:`._faults.inject_poison`).

The client retries what was not accepted with If-Match (:mod:`._workload`). Once the
queues drained, the checker (:mod:`._checker`) compares every subset with its source and
the history with the accepted writes, and one line per backend says what held::

    chaos sqlite: accepted=N applied=N lost=0 duplicated_effects=0 stale_overwrites=0 ...

Every poison must be in the dead letters it belongs in, with its reason, and nothing
else; the event after the one that always fails, on the same entity, must not wait longer
than that one's retries (plus a lease, for a listener killed meanwhile).

``CHAOS_SIZE`` picks the size (:data:`SIZES`): ``ci`` (default: 500 people; 10,000 updates
on the embedded default, 3,000 on each real broker), ``full`` (10,000 on each), ``large``
(2,000 people, 50,000 updates on each) or ``small`` (a quick look while developing).
``CHAOS_SKIP`` leaves faults out by name (:data:`SKIPPED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.brokers import connect

from ..e2e.conftest import Deployment, start, stop
from ._checker import check, history
from ._faults import (
    API_ROLES,
    LISTENER_ROLES,
    PoisonSet,
    Schedule,
    inject_poison,
    kill_random,
    tidings,
)
from ._probe import LagProbe
from ._workload import Client, Ledger, stream

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.e2e]

SIZES = {
    "small": {"sqlite": (50, 1_000), "amqp": (50, 1_000), "nats": (50, 1_000)},
    "ci": {"sqlite": (500, 10_000), "amqp": (500, 3_000), "nats": (500, 3_000)},
    "full": {"sqlite": (500, 10_000), "amqp": (500, 10_000), "nats": (500, 10_000)},
    "large": {"sqlite": (2_000, 50_000), "amqp": (2_000, 50_000), "nats": (2_000, 50_000)},
}
"""People and updates per backend for each ``CHAOS_SIZE``. ``ci`` makes 10,000 updates on
the embedded default and 3,000 on each real broker, so that the three fit in CI's time on
two cores; ``full`` makes 10,000 on each."""
SIZE_NAME = os.environ.get("CHAOS_SIZE", "ci")
SIZE = SIZES[SIZE_NAME]
TIMEOUT = {"small": 600, "ci": 900, "full": 2400, "large": 7200}[SIZE_NAME]
"""Seconds one backend's run may take at that size."""
WRITERS = 24
"""Concurrent writers."""

SKIPPED = {name.strip() for name in os.environ.get("CHAOS_SKIP", "").split(",") if name.strip()}
"""Faults left out of the schedule, by name (``CHAOS_SKIP="database restart"``): for
finding which fault breaks a run, never for making one pass."""

FAULT_GAP = 3.0
"""Seconds between two faults."""
PAUSE_SECONDS = 5.0
LEASE = 30.0
"""The default ``lease_seconds``: how long a delivery held by a killed listener stays
invisible (SQLite broker) before another listener gets it."""
SUBSCRIPTIONS = ("tenure-listener", "person-listener", "activity-listener")


Restarts = dict[str, Callable[[], None]]


@contextlib.contextmanager
def own_servers(backend: str, folder: Path) -> Iterator[tuple[list[str], Restarts]]:
    """The test's own broker server (a RabbitMQ node, a NATS server) and PostgreSQL cluster:
    the ``tidings up`` options that use them, and how to restart each."""
    if backend == "sqlite":
        yield [], {}
        return
    from ..integration import _rabbit_node
    from ._postgres_node import PostgresNode, available

    for missing in (available(), _rabbit_node.available() if backend == "amqp" else None):
        if missing:
            pytest.skip(missing)
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        database = PostgresNode()
        stack.callback(database.destroy)
        database.create()
        if backend == "amqp":
            node = _rabbit_node.RabbitNode(folder / "rabbit")
            stack.callback(node.kill)
            node.start()
            url = node.url(namespace)

            def restart_broker() -> None:
                node.kill()
                node.start()

        else:
            from ..integration._nats_servers import NatsServer

            server = NatsServer(folder / "nats")
            stack.callback(server.stop)
            server.start()
            url = f"{server.url}/?namespace={namespace}"

            def restart_broker() -> None:
                server.stop(signal.SIGTERM)
                server.start()

        args = ["--broker", url, "--database-url", database.url()]
        yield args, {"broker": restart_broker, "database": database.restart}


BACKENDS = [
    pytest.param("sqlite"),
    pytest.param("amqp", marks=(pytest.mark.rabbitmq, pytest.mark.postgres)),
    pytest.param("nats", marks=(pytest.mark.nats, pytest.mark.postgres)),
]
CHOSEN = os.environ.get("CHAOS_BACKENDS", "sqlite,amqp,nats").split(",")
"""The backends to run (``CHAOS_BACKENDS``, comma separated; all three by default, in
``make test`` as in ``make chaos``)."""


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] in CHOSEN])
async def test_faults_lose_double_and_stale_nothing(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with own_servers(backend, tmp_path) as (args, restarts):
        d = start(tmp_path / ".tidings", *args, "--instances", "2")
        log: list[str] = []
        try:
            line, failures = await run_chaos(d, args, restarts, SIZE[backend], tmp_path, log)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stop(d)
            (tmp_path / "deployment.log").write_text("".join(d.output))
            with capsys.disabled():
                print(f"\nchaos {backend}: " + "\n  ".join(log))
    assert failures == [], "\n".join([line, *failures, f"processes: {tmp_path}/deployment.log"])


async def run_chaos(
    d: Deployment,
    args: list[str],
    restarts: Restarts,
    size: tuple[int, int],
    work: Path,
    log: list[str],
) -> tuple[str, list[str]]:
    """Drive ``d`` under faults and check it: the summary line, first in ``log`` (which
    then tells the faults as they ran and what the checks measured), and what failed."""
    broker_url = args[1] if args else f"sqlite:///{d.home}/broker.db"
    where = ["--home", str(d.home), *args[2:]]
    urls = {"person": d.person, "tenure": d.tenure, "activity": d.activity}
    ledger = Ledger()
    limits = httpx.Limits(max_connections=WRITERS + 8)
    async with httpx.AsyncClient(timeout=10, headers=d.headers(), limits=limits) as http:
        client = Client(
            http,
            instances(d, "person-api"),
            instances(d, "tenure-api"),
            ledger,
        )
        probe = LagProbe(client, await client.create_unit(-1), d.tenure)
        victim = await client.create_unit(-2)
        poison = PoisonSet()
        behind: dict[str, float] = {}

        async def inject() -> str:
            """The poison, then a rename of the person whose event always fails: on a
            broker with per-key order the rename waits behind that event until it is
            dead-lettered, and no longer."""
            began = time.time()
            poison.sent, poison.unknown = await inject_poison(broker_url, victim.person_id, work)
            rename = await client.update_person(victim)
            assert rename is not None
            behind["injected"] = began
            behind["renamed"] = time.time()
            behind["seen"] = await probe.seen(victim, rename.token, time.time)
            return "undecodable, schema violation, failing handler, unknown type"

        async def pause_and_resume() -> str:
            await asyncio.to_thread(tidings, "pause", "activity-listener", *where)
            await asyncio.sleep(PAUSE_SECONDS)
            await asyncio.to_thread(tidings, "resume", "activity-listener", *where)
            return f"activity-listener paused {PAUSE_SECONDS:g}s, then resumed"

        async def kill(roles: tuple[str, ...]) -> str:
            return kill_random(d.process.pid, roles)

        def restart(server: str) -> Callable[[], Awaitable[str]]:
            async def step() -> str:
                began = time.monotonic()
                await asyncio.to_thread(restarts[server])
                return f"{server} restarted in {time.monotonic() - began:.1f}s"

            return step

        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("kill api", lambda: kill(API_ROLES)),
            ("kill listener", lambda: kill(LISTENER_ROLES)),
            ("pause", pause_and_resume),
            ("kill api", lambda: kill(API_ROLES)),
            ("kill listener", lambda: kill(LISTENER_ROLES)),
        ]
        for i, server in enumerate(restarts):
            steps.insert(2 * i, (f"{server} restart", restart(server)))
        steps = [step for step in steps if step[0] not in SKIPPED]
        schedule = Schedule(steps, FAULT_GAP, log)

        done = asyncio.Event()
        began = time.monotonic()
        background = [
            asyncio.create_task(schedule.run(done)),
            asyncio.create_task(probe.run(done)),
            asyncio.create_task(schedule.record("poison", inject())),
        ]
        try:
            await stream(client, *size, WRITERS)
        finally:
            done.set()
            await asyncio.gather(*background)
        wrote = time.monotonic() - began
        log.append(
            f"{ledger.updates()} updates, {len(ledger.accepted)} writes accepted in {wrote:.0f}s"
            f" ({ledger.refused} attempts not accepted, {len(ledger.uncertain)} committed unseen)"
        )
        drained = await drain(broker_url)
        log.append(f"queues drained {drained:.0f}s after the last write")
        verdict = await check(http, urls, ledger, [*ledger.units, probe.unit, victim])
        verdict.max_lag_s = probe.worst()
        letters = await dead_letters(broker_url, poison)
        verdict.dead_lettered = poison.check(letters, verdict.problems)
        log.append(f"dead letters: {verdict.dead_lettered}, of which {poison.repeated} repeats")
        recorded = await history(http, d.activity, poison.unknown[1])
        log.append(f"checked in {time.monotonic() - began - wrote:.0f}s")
    line = verdict.line()
    log.insert(0, line)
    failing = poison.sent[-1].message_id
    dead_at = [
        datetime.fromisoformat(e["lastFailedAt"]).timestamp()
        for e in letters["tenure-listener"]
        if e["messageId"] == failing
    ]
    retried = (dead_at or [float("inf")])[0] - behind["injected"]
    held = behind["seen"] - behind["renamed"]
    log.append(f"the failing event was retried {retried:.1f}s, then dead-lettered")
    log.append(f"the next event of its entity reached the subset {held:.1f}s after its 204")
    failures = list(verdict.problems)
    # Every update the workload made was either accepted or committed unseen (its answer
    # lost, found committed on the retry): both count as made.
    made = ledger.updates() + len(ledger.uncertain)
    if verdict.applied != verdict.accepted or made < size[1]:
        failures.append(
            f"{verdict.applied} applied of {verdict.accepted}; {made} updates made, "
            f"{size[1]} wanted"
        )
    if held >= retried + LEASE + 15:
        failures.append(f"held back {held:.1f}s behind the poison")
    if [e["sourceEventId"] for e in recorded] != [poison.unknown[0]]:
        failures.append(f"the event of an unknown type is not in the history once: {recorded}")
    return line, failures


async def drain(broker_url: str, timeout: float = 180.0) -> float:
    """Wait until no subscription holds a ready, unsettled or delayed event; the seconds it
    took."""
    began = time.monotonic()
    broker = await connect(broker_url)
    try:
        while True:
            depths = [await broker.depth(sub) for sub in SUBSCRIPTIONS]
            if all(d.ready + d.in_flight + d.delayed == 0 for d in depths):
                return time.monotonic() - began
            assert time.monotonic() - began < timeout, f"not drained: {depths}"
            await asyncio.sleep(0.5)
    finally:
        await broker.close()


def instances(d: Deployment, role: str) -> list[str]:
    """The URLs of every copy of ``role`` (``person-api``), as ``tidings up`` listed them."""
    found = [
        line.split()[1]
        for line in d.output
        if line.startswith("  ")
        and line.split()[:1] in ([role], *[[f"{role}-{k}"] for k in range(1, 9)])
    ]
    assert found, f"no {role} in {d.output}"
    return found


async def dead_letters(broker_url: str, poison: PoisonSet) -> dict[str, list[dict[str, Any]]]:
    """Every subscription's dead letters, read with ``tidings dlq list --json`` once the
    poison expected there has arrived (or a minute has passed)."""
    letters: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 60
    while True:
        for sub in SUBSCRIPTIONS:
            out = await asyncio.to_thread(
                tidings, "dlq", "list", sub, "--json", "--broker", broker_url
            )
            letters[sub] = json.loads(out)
        arrived = {(s, str(e["messageId"])) for s, entries in letters.items() for e in entries}
        wanted = {(s, p.message_id) for p in poison.sent for s in p.dead_in}
        if wanted <= arrived or time.monotonic() > deadline:
            return letters
        await asyncio.sleep(1.0)
