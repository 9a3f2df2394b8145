"""``tidings reconcile`` against the running reference deployment, as an operator runs it:
drift made by hand in a domain database is reported field by field, ``--fix`` repairs it
through the version guard, and a copy newer than the source read is left alone. On the
embedded default, and on RabbitMQ with every domain on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from person_service.tables import person_tenures
from tenure_service.tables import household_members
from tidings.config import Settings
from tidings.db import create_engine, session_factory
from tidings.subsets import VersionGuard

from .conftest import (
    BACKENDS,
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
class Running:
    deployment: Deployment
    database_url: str | None

    def domain_url(self, domain: str) -> str:
        settings = Settings(self.deployment.home, "", self.database_url)
        return settings.domain_database_url(domain)


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=BACKENDS[name], id=name) for name in ("sqlite", "amqp")],
)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    prefix = f"e2e_{uuid.uuid4().hex[:10]}"
    args = backend_args(request.param, prefix)
    deployment = start(tmp_path_factory.mktemp("up") / ".tidings", *args)
    database = args[args.index("--database-url") + 1] if "--database-url" in args else None
    try:
        yield Running(deployment, database)
    finally:
        if deployment.process.poll() is None:
            stop(deployment)
        clean_up(request.param, prefix, args)


@pytest.fixture
async def engines(running: Running) -> AsyncIterator[dict[str, AsyncEngine]]:
    made = {d: create_engine(running.domain_url(d)) for d in ("person", "tenure")}
    yield made
    for engine in made.values():
        await engine.dispose()


def reconcile(running: Running, subset: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """``tidings reconcile SUBSET --json``, as a separate process; its exit code and report."""
    d = running.deployment
    base_port = httpx.URL(d.person).port
    assert base_port is not None
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TIDINGS_SERVICE_TOKEN", "TIDINGS_PERSON_API_URL", "TIDINGS_TENURE_API_URL")
    }
    database = ["--database-url", running.database_url] if running.database_url else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "reconcile",
            subset,
            "--home",
            str(d.home),
            "--base-port",
            str(base_port),
            *database,
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


async def settled(http: httpx.AsyncClient, d: Deployment) -> tuple[str, str]:
    """A person and a tenure listing her, with both listeners' copies made."""
    r = await http.post(f"{d.person}/api/v1/persons", json=person_body(), headers=d.headers())
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await http.post(
        f"{d.tenure}/api/v1/tenures",
        json=tenure_body(member(pid, "Ms Ann Smithe")),
        headers=d.headers(),
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]

    async def both() -> tuple[Any, Any]:
        tenure = await http.get(f"{d.tenure}/api/v1/tenures/{tid}", headers=d.headers())
        person = await http.get(f"{d.person}/api/v1/persons/{pid}", headers=d.headers())
        return tenure.json(), person.json()

    await eventually(
        both,
        lambda tp: (
            tp[0]["householdMembers"][0]["fullName"] == "Ms Ann Smyth"
            and [t["id"] for t in tp[1]["tenures"]] == [tid]
        ),
    )
    return pid, tid


def only(report: dict[str, Any], *ids: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["sourceId"] in ids or f["holderId"] in ids]


async def test_hand_made_drift_in_a_tenure_is_reported_then_fixed_then_gone(
    running: Running, engines: dict[str, AsyncEngine], http: httpx.AsyncClient
) -> None:
    d = running.deployment
    pid, tid = await settled(http, d)
    async with engines["tenure"].begin() as conn:
        await conn.execute(
            update(household_members)
            .where(household_members.c.tenure_id == tid)
            .values(full_name="Ms Ann Smyht")
        )

    code, report = reconcile(running, "tenure-household-members")
    assert code == 1
    assert [f for f in report["findings"] if f["status"] != "newer"] == [
        {
            "sourceId": pid,
            "holderId": tid,
            "field": "fullName",
            "copy": "Ms Ann Smyht",
            "source": "Ms Ann Smyth",
            "status": "drifted",
        }
    ]
    assert (report["drifted"], report["fixed"], report["remaining"]) == (1, 0, 1)

    code, report = reconcile(running, "tenure-household-members", "--fix")
    assert code == 0 and [f["status"] for f in report["findings"]] == ["fixed"]
    tenure = (await http.get(f"{d.tenure}/api/v1/tenures/{tid}", headers=d.headers())).json()
    assert tenure["householdMembers"][0]["fullName"] == "Ms Ann Smyth"

    code, report = reconcile(running, "tenure-household-members")
    assert code == 0 and only(report, pid) == [] and report["drifted"] == 0


async def test_hand_made_drift_in_a_person_summary_is_fixed(
    running: Running, engines: dict[str, AsyncEngine], http: httpx.AsyncClient
) -> None:
    d = running.deployment
    pid, tid = await settled(http, d)
    where = (person_tenures.c.person_id == pid, person_tenures.c.tenure_id == tid)
    async with engines["person"].begin() as conn:
        summary = await conn.scalar(select(person_tenures.c.summary).where(*where))
        await conn.execute(
            update(person_tenures).where(*where).values(summary={**summary, "type": "Wrong"})
        )

    code, report = reconcile(running, "person-tenures")
    assert code == 1 and only(report, pid) == [
        {
            "sourceId": tid,
            "holderId": pid,
            "field": "type",
            "copy": "Wrong",
            "source": "Secure",
            "status": "drifted",
        }
    ]
    code, report = reconcile(running, "person-tenures", "--fix")
    assert code == 0 and [f["status"] for f in only(report, pid)] == ["fixed"]
    person = (await http.get(f"{d.person}/api/v1/persons/{pid}", headers=d.headers())).json()
    assert [t["type"] for t in person["tenures"]] == ["Secure"]
    code, report = reconcile(running, "person-tenures")
    assert code == 0 and only(report, pid) == [] and report["drifted"] == 0


async def test_a_copy_newer_than_the_source_read_is_left_as_it_is(
    running: Running, engines: dict[str, AsyncEngine], http: httpx.AsyncClient
) -> None:
    d = running.deployment
    pid, tid = await settled(http, d)
    # As if a person event at v2 reached the copy while the Person API still answers v1.
    async with session_factory(engines["tenure"])() as s, s.begin():
        await VersionGuard("tenure.householdMembers").fresh(
            s, source_id=pid, holder_id=tid, version=2, fields=["fullName"]
        )
        await s.execute(
            update(household_members)
            .where(household_members.c.tenure_id == tid)
            .values(full_name="Ms Ann Later")
        )

    code, report = reconcile(running, "tenure-household-members", "--fix")
    assert code == 0
    assert [(f["field"], f["status"]) for f in only(report, tid)] == [("fullName", "newer")]
    tenure = (await http.get(f"{d.tenure}/api/v1/tenures/{tid}", headers=d.headers())).json()
    assert tenure["householdMembers"][0]["fullName"] == "Ms Ann Later"


async def test_an_unreachable_source_api_is_one_line_and_exit_2(
    running: Running, http: httpx.AsyncClient
) -> None:
    d = running.deployment
    await settled(http, d)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "reconcile",
            "tenure-household-members",
            "--home",
            str(d.home),
            "--source-url",
            "http://127.0.0.1:9",
            *(["--database-url", running.database_url] if running.database_url else []),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("tidings: the person API could not be read: ")
    assert result.stderr.count("\n") == 1
