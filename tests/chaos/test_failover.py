"""Failover on real brokers and PostgreSQL, under load: every accepted write reaches its
subset and the history, and nothing is applied twice, when

* one of each process is killed with SIGKILL: two instances of every API (each with its
  relay) and listener, three tenure-listeners;
* one node of a 3-node NATS cluster is killed with SIGKILL (streams replicated 3 times)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..e2e.conftest import (
    PG_URL,
    Deployment,
    backend_args,
    clean_up,
    drop_schemas,
    eventually,
    start,
    stop,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

PEOPLE = 12
UPDATES = 240


def children(pid: int) -> dict[int, str]:
    """The direct children of ``pid`` and their command lines."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            found[int(child)] = cmdline.decode()
    return found


def kill_one(d: Deployment, role: str) -> int:
    """SIGKILL one process whose command line contains ``role`` ('tenure_service listener')."""
    victims = sorted(pid for pid, cmd in children(d.process.pid).items() if role in cmd)
    assert len(victims) >= 2, f"expected several {role}: {victims}"
    os.kill(victims[0], signal.SIGKILL)
    return victims[0]


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("amqp", marks=(pytest.mark.rabbitmq, pytest.mark.postgres)),
        pytest.param("nats", marks=(pytest.mark.nats, pytest.mark.postgres)),
    ],
)
async def test_killing_one_of_each_process_under_load_loses_and_doubles_nothing(
    backend: str, tmp_path: Path
) -> None:
    prefix = f"ha_{uuid.uuid4().hex[:10]}"
    args = backend_args(backend, prefix)
    d = start(tmp_path / ".tidings", *args, "--instances", "2", "--scale", "tenure-listener=3")
    assert sum("tenure-listener-" in line for line in d.output) == 3
    killed: list[int] = []

    def kill_one_of_each() -> None:
        for role in (
            "person_service api",
            "tenure_service listener",
            "person_service listener",
            "activity_service listener",
        ):
            killed.append(kill_one(d, role))

    try:
        await drive(d, kill_one_of_each)
        assert len(killed) == 4
    finally:
        if d.process.poll() is None:
            stop(d)
        await asyncio.to_thread(clean_up, backend, prefix, args)


async def test_a_nats_cluster_losing_a_node_under_load_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    from ..conftest import require_service
    from ..integration._nats_servers import cluster, wait_for_jetstream

    require_service("PostgreSQL", "127.0.0.1", 5432)
    nodes = cluster(tmp_path / "nats", 3)
    for node in nodes:
        node.start()
    prefix = f"ha_{uuid.uuid4().hex[:10]}"
    hosts = ",".join(n.url.removeprefix("nats://") for n in nodes)
    broker = f"nats://{hosts}/?namespace={prefix.replace('_', '-')}&replicas=3"
    args = ["--broker", broker, "--database-url", f"{PG_URL}?schema={prefix}"]
    try:
        await wait_for_jetstream(nodes[0].url)
        d = start(tmp_path / ".tidings", *args)
        try:
            await drive(d, lambda: nodes[0].stop(signal.SIGKILL))
        finally:
            if d.process.poll() is None:
                stop(d)
    finally:
        for node in nodes:
            node.stop()
        await asyncio.to_thread(drop_schemas, prefix)


async def drive(d: Deployment, fault: Callable[[], None]) -> None:
    """Create people in tenures, rename them UPDATES times (``fault`` a third of the way),
    then check every accepted rename reached the tenure and the history exactly once."""
    base = int(d.person.rsplit(":", 1)[1])
    persons = [d.person, f"http://127.0.0.1:{base + 4}"]
    async with httpx.AsyncClient(timeout=10, headers=d.headers()) as http:
        people: list[tuple[str, str]] = []
        for i in range(PEOPLE):
            r = await http.post(
                f"{d.person}/api/v1/persons", json={"firstName": f"P{i}", "surname": "Start"}
            )
            pid = r.json()["id"]
            r = await http.post(
                f"{d.tenure}/api/v1/tenures",
                json={
                    "householdMembers": [
                        {"id": pid, "fullName": f"P{i} Start", "isResponsible": True}
                    ]
                },
            )
            assert r.status_code == 201, r.text
            people.append((pid, r.json()["id"]))

        accepted: dict[str, list[str]] = {pid: [] for pid, _ in people}
        for n in range(UPDATES):
            pid, _ = people[n % PEOPLE]
            surname = f"S{n}"
            if n == UPDATES // 3:
                fault()
            for attempt in range(40):
                url = persons[(n + attempt) % 2] + f"/api/v1/persons/{pid}"
                try:
                    r = await http.patch(url, json={"surname": surname})
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                assert r.status_code == 204, r.text
                accepted[pid].append(surname)
                break
            else:
                pytest.fail(f"no Person API instance took update {n}")

        for pid, tid in people:
            final = accepted[pid][-1]
            await eventually(
                lambda tid=tid: _get(http, f"{d.tenure}/api/v1/tenures/{tid}"),
                lambda t, final=final: t["householdMembers"][0]["fullName"].endswith(final),
                timeout=90,
            )
        for pid, _ in people:
            history = await eventually(
                lambda pid=pid: _history(http, d, pid),
                lambda h, pid=pid: set(accepted[pid]) <= {a["newData"].get("surname") for a in h},
                timeout=90,
            )
            ids = Counter(a["sourceEventId"] for a in history)
            assert max(ids.values()) == 1, "an event was recorded twice"
            surnames = Counter(
                a["newData"].get("surname")
                for a in history
                if a["eventType"] == "PersonUpdatedEvent"
            )
            assert max(surnames.values()) == 1, "a change was published as two events"


async def _get(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await http.get(url)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _history(http: httpx.AsyncClient, d: Deployment, pid: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    token = None
    while True:
        url = f"{d.activity}/api/v1/activityhistory?targetId={pid}&pageSize=100"
        page = await _get(http, url + (f"&paginationToken={token}" if token else ""))
        results += page["results"]
        token = page["paginationDetails"]["nextToken"]
        if token is None:
            return results
