"""The operator's commands against the running reference deployment (``tidings up``), as an
operator runs them: ``topology show``, ``subscriptions``, ``pause``/``resume``/``throttle``
followed by the running listeners, ``trace`` of a real request's correlation id, and a
poison event seen, redriven and purged with ``dlq``. On the embedded default, and on
RabbitMQ with every domain (and the control store) on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tidings.brokers import Message, connect
from tidings.db import create_engine

from .conftest import (
    BACKENDS,
    PG_URL,
    Deployment,
    backend_args,
    clean_up,
    eventually,
    member,
    person_body,
    start,
    stop,
    tenure_body,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Operator:
    """A running deployment and the ``tidings`` command pointed at it."""

    deployment: Deployment
    database_url: str | None

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "TIDINGS_HOME": str(self.deployment.home),
            "TIDINGS_BROKER": self.deployment.broker_url,
        }
        env.pop("TIDINGS_DATABASE_URL", None)
        if self.database_url:
            env["TIDINGS_DATABASE_URL"] = self.database_url
        return subprocess.run(
            [sys.executable, "-m", "tidings.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
            env=env,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    async def rows(self) -> dict[str, dict[str, Any]]:
        out = await asyncio.to_thread(self.json, "subscriptions")
        return {row["name"]: row for row in out}


async def _drop_control_schema(prefix: str) -> None:
    engine = create_engine(PG_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}_tidings" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=BACKENDS[name], id=name) for name in ("sqlite", "amqp")],
)
def operator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    prefix = f"e2e_{uuid.uuid4().hex[:10]}"
    args = backend_args(request.param, prefix)
    deployment = start(tmp_path_factory.mktemp("up") / ".tidings", *args)
    deployment.backend = request.param
    deployment.broker_url = (
        args[args.index("--broker") + 1]
        if "--broker" in args
        else f"sqlite:///{deployment.home}/broker.db"
    )
    database = args[args.index("--database-url") + 1] if "--database-url" in args else None
    try:
        yield Operator(deployment, database)
    finally:
        if deployment.process.poll() is None:
            stop(deployment)
        clean_up(request.param, prefix, args)
        if database:
            asyncio.run(_drop_control_schema(prefix))


SUBSCRIPTIONS = {"activity-listener", "alerts", "person-listener", "tenure-listener"}


async def _person_in_a_tenure(http: httpx.AsyncClient, d: Deployment) -> tuple[str, str]:
    r = await http.post(f"{d.person}/api/v1/persons", json=person_body(), headers=d.headers())
    assert r.status_code == 201, r.text
    pid = str(r.json()["id"])
    r = await http.post(
        f"{d.tenure}/api/v1/tenures",
        json=tenure_body(member(pid, "Ms Ann Smyth")),
        headers=d.headers(),
    )
    assert r.status_code == 201, r.text
    return pid, str(r.json()["id"])


async def _shared_depth(broker_url: str) -> bool:
    """Whether ``subscriptions`` sees what a paused listener process holds (RabbitMQ counts
    only ready messages; a paused listener may hold the event in its prefetch)."""
    broker = await connect(broker_url)
    try:
        return broker.capabilities.shared_depth
    finally:
        await broker.close()


async def _member_name(http: httpx.AsyncClient, d: Deployment, tid: str, pid: str) -> str:
    r = await http.get(f"{d.tenure}/api/v1/tenures/{tid}", headers=d.headers())
    assert r.status_code == 200, r.text
    return str({m["id"]: m for m in r.json()["householdMembers"]}[pid]["fullName"])


def test_topology_show_lists_what_tidings_up_declared(operator: Operator) -> None:
    shown = operator.json("topology", "show")["subscriptions"]
    assert {s["name"] for s in shown} == SUBSCRIPTIONS
    assert all(s["on_broker"] for s in shown), shown
    tenure = next(s for s in shown if s["name"] == "tenure-listener")
    assert (
        tenure["topics"] == ["person", "tenure"] and "PersonUpdatedEvent" in tenure["event_types"]
    )
    table = operator.ok("topology", "show")
    assert all(name in table for name in SUBSCRIPTIONS) and "max attempts" in table


async def test_subscriptions_show_depth_and_the_running_listeners(operator: Operator) -> None:
    rows = await eventually(
        operator.rows,
        lambda rows: all(rows[name]["listeners"] >= 1 for name in SUBSCRIPTIONS),
        timeout=20,
    )
    assert set(rows) == SUBSCRIPTIONS
    for row in rows.values():
        assert row["on_broker"] and row["limits"]["paused"] is False
        assert row["ready"] is not None and row["dead_letters"] is not None
    table = operator.ok("subscriptions")
    assert all(name in table for name in SUBSCRIPTIONS) and "running" in table


async def test_paused_listeners_hold_events_until_resumed_and_follow_throttle(
    operator: Operator, http: httpx.AsyncClient
) -> None:
    d = operator.deployment
    pid, tid = await _person_in_a_tenure(http, d)
    await eventually(lambda: _member_name(http, d, tid, pid), lambda n: n == "Ms Ann Smyth")
    try:
        operator.ok("pause", "tenure-listener")
        await eventually(
            operator.rows,
            lambda rows: (
                1
                <= rows["tenure-listener"]["listeners"]
                == rows["tenure-listener"]["listeners_paused"]
            ),
        )
        r = await http.patch(
            f"{d.person}/api/v1/persons/{pid}", headers=d.headers(), json={"surname": "Paused"}
        )
        assert r.status_code == 204, r.text
        if await _shared_depth(d.broker_url):
            await eventually(
                operator.rows,
                lambda rows: sum(rows["tenure-listener"][k] for k in ("ready", "in_flight")) >= 1,
            )
        await asyncio.sleep(1.5)
        assert await _member_name(http, d, tid, pid) == "Ms Ann Smyth", "a paused listener applied"

        throttled = operator.json("throttle", "tenure-listener", "--in-flight", "2", "--rate", "5")
        assert (throttled["in_flight"], throttled["rate"], throttled["paused"]) == (2, 5.0, True)
        operator.ok("resume", "tenure-listener")
        await eventually(lambda: _member_name(http, d, tid, pid), lambda n: n == "Ms Ann Paused")
        rows = await operator.rows()
        assert rows["tenure-listener"]["limits"] == {
            "paused": False,
            "in_flight": 2,
            "rate": 5.0,
            "overridden": ["in_flight", "rate"],
        }
    finally:
        operator.ok("resume", "tenure-listener")
        reset = operator.json("throttle", "tenure-listener", "--reset")
    assert reset["overridden"] == [] and reset["rate"] is None


async def test_trace_tells_where_a_patch_went_and_what_each_listener_did(
    operator: Operator, http: httpx.AsyncClient
) -> None:
    d = operator.deployment
    pid, tid = await _person_in_a_tenure(http, d)
    correlation = f"ops-{uuid.uuid4()}"
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(**{"x-correlation-id": correlation}),
        json={"surname": "Traced"},
    )
    assert r.status_code == 204 and r.headers["x-correlation-id"] == correlation

    def reached(story: dict[str, Any]) -> bool:
        done = {(r["where"], r["outcome"]) for r in story.get("records", [])}
        return {
            ("person", "published"),
            ("tenure-listener", "applied"),
            ("activity-listener", "applied"),
        } <= done

    async def story() -> dict[str, Any]:
        result = await asyncio.to_thread(operator.run, "trace", correlation, "--json")
        return json.loads(result.stdout) if result.returncode == 0 else {}

    told = await eventually(story, reached, timeout=20)
    assert {"tenure-listener", "activity-listener"} <= set(told["subscriptions"])
    assert told["outcomes"]["published"] >= 1
    published = [r for r in told["records"] if r["outcome"] == "published"]
    assert published[0]["event_type"] == "PersonUpdatedEvent" and published[0]["entity_id"] == pid
    assert await _member_name(http, d, tid, pid) == "Ms Ann Traced"

    timeline = operator.ok("trace", correlation)
    assert "PersonUpdatedEvent" in timeline and "subscriptions reached:" in timeline
    unknown = operator.run("trace", f"never-{uuid.uuid4()}")
    assert unknown.returncode == 1 and "nothing recorded" in unknown.stderr


async def _publish_poison(broker_url: str, message_id: str) -> None:
    broker = await connect(broker_url)
    try:
        await broker.publish(
            "person",
            [
                Message(
                    id=message_id,
                    event_type="PersonUpdatedEvent",
                    key="poison",
                    body=b"this is no event",
                )
            ],
        )
    finally:
        await broker.close()


async def test_a_poison_event_is_seen_redriven_and_purged(operator: Operator) -> None:
    poison = str(uuid.uuid4())
    await _publish_poison(operator.deployment.broker_url, poison)

    async def letters() -> list[dict[str, Any]]:
        found = await asyncio.to_thread(operator.json, "dlq", "list", "tenure-listener")
        return [d for d in found if d["messageId"] == poison]

    [dead] = await eventually(letters, lambda found: len(found) == 1, timeout=20)
    assert dead["reason"] and dead["attempts"] >= 1
    shown = operator.ok("dlq", "show", "tenure-listener", dead["id"])
    assert "this is no event" in shown and f"reason:        {dead['reason']}" in shown
    rows = await operator.rows()
    assert rows["tenure-listener"]["dead_letters"] >= 1

    redriven = operator.json("dlq", "redrive", "tenure-listener", "--id", dead["id"], "--rate", "5")
    assert redriven == {"subscription": "tenure-listener", "redriven": 1}
    [again] = await eventually(letters, lambda found: len(found) == 1, timeout=20)
    assert again["reason"] == dead["reason"], "the redriven poison failed for another reason"

    refused = operator.run("dlq", "redrive", "tenure-listener")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    declined = operator.run("dlq", "purge", "tenure-listener", input="n\n")
    assert declined.returncode == 2 and await letters()
    purged = operator.json("dlq", "purge", "tenure-listener", "--yes")
    assert purged["purged"] >= 1 and await letters() == []


async def test_replay_backfills_one_subscription_and_changes_nothing_applied_twice(
    operator: Operator, http: httpx.AsyncClient
) -> None:
    d = operator.deployment
    pid, _ = await _person_in_a_tenure(http, d)
    correlation = f"replay-{uuid.uuid4()}"
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(**{"x-correlation-id": correlation}),
        json={"firstName": "Di"},
    )
    assert r.status_code == 204, r.text
    history_url = f"{d.activity}/api/v1/activityhistory?targetId={pid}"

    async def history() -> list[dict[str, Any]]:
        r = await http.get(history_url, headers=d.headers())
        return list(r.json()["results"])

    before = await eventually(history, lambda h: len(h) == 2)

    async def outcomes() -> set[tuple[str, str]]:
        result = await asyncio.to_thread(operator.run, "trace", correlation, "--json")
        records = json.loads(result.stdout)["records"] if result.returncode == 0 else []
        return {(r["where"], r["outcome"]) for r in records}

    await eventually(outcomes, lambda seen: ("activity-listener", "applied") in seen)

    dry = operator.json(
        "replay", "--topic", "person", "--to", "activity-listener", "--domain", "person",
        "--entity", pid, "--dry-run",
    )  # fmt: skip
    assert (dry["matched"], dry["replayed"]) == (2, 0)
    for _ in range(2):
        done = operator.json(
            "replay", "--topic", "person", "--to", "activity-listener", "--domain", "person",
            "--entity", pid, "--rate", "50",
        )  # fmt: skip
        assert (done["matched"], done["replayed"]) == (2, 2)

    seen = await eventually(outcomes, lambda seen: ("activity-listener", "duplicate") in seen)
    assert ("tenure-listener", "duplicate") not in seen, "the replay reached another subscription"
    await asyncio.sleep(1)
    assert await history() == before, "a replayed event was applied twice"

    refused = operator.run(
        "replay", "--topic", "person", "--to", "person-listener", "--domain", "person"
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr


async def test_events_tail_follows_a_topic_live_and_takes_nothing_away(
    operator: Operator, http: httpx.AsyncClient
) -> None:
    d = operator.deployment
    env = {
        **os.environ,
        "TIDINGS_HOME": str(d.home),
        "TIDINGS_BROKER": d.broker_url,
        "PYTHONUNBUFFERED": "1",
    }
    tail = subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", "events", "tail", "--topic", "person",
         "--type", "PersonCreatedEvent", "--count", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert tail.stderr is not None
        ready = await asyncio.wait_for(asyncio.to_thread(tail.stderr.readline), 30)
        assert "following person" in ready, ready
        pid, tid = await _person_in_a_tenure(http, d)
        out, err = await asyncio.wait_for(asyncio.to_thread(tail.communicate), 30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    [shown] = [json.loads(line) for line in out.splitlines()]
    assert (shown["eventType"], shown["entityId"]) == ("PersonCreatedEvent", pid)

    async def history() -> list[str]:
        r = await http.get(
            f"{d.activity}/api/v1/activityhistory?targetId={pid}", headers=d.headers()
        )
        return [a["eventType"] for a in r.json()["results"]]

    assert await eventually(history, lambda kinds: "PersonCreatedEvent" in kinds)
    assert await eventually(lambda: _member_name(http, d, tid, pid), lambda n: n == "Ms Ann Smyth")
