"""Reconciling the reference deployment's subsets against the real Person and Tenure APIs,
run in this process on the embedded default (SQLite databases and broker). Drift is made
directly in the holder's database, as a hand edit or a lost event would leave it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from person_service.api import create_app as person_app
from person_service.reconcile import PersonTenures
from person_service.tables import person_tenures
from reference_deployment import SUBSETS, TOPOLOGY
from tenure_service.api import create_app as tenure_app
from tenure_service.reconcile import HouseholdMembers
from tenure_service.tables import household_members
from tidings.brokers import connect
from tidings.cli import app as cli
from tidings.config import Settings
from tidings.db import create_engine, session_factory
from tidings.subsets import MEMBERSHIP, Finding, SourceClient, Status, VersionGuard, reconcile
from tidings.web import AuthSettings, mint_token

from ..e2e.conftest import member, person_body, tenure_body

SECRET = "s" * 48
WRITERS = "writers"


@dataclass
class World:
    person: httpx.AsyncClient
    tenure: httpx.AsyncClient
    person_db: AsyncEngine
    tenure_db: AsyncEngine
    people: SourceClient
    tenures: SourceClient

    async def create_person(self, **fields: Any) -> str:
        r = await self.person.post("/api/v1/persons", json=person_body(**fields))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def create_tenure(self, *members: dict[str, Any], **fields: Any) -> str:
        r = await self.tenure.post("/api/v1/tenures", json=tenure_body(*members, **fields))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings(home=tmp_path, broker_url=f"sqlite:///{tmp_path}/broker.db")
    broker = await connect(settings.broker_url)
    await broker.declare(TOPOLOGY)
    await broker.close()
    auth = AuthSettings(secret=SECRET, write_groups=frozenset({WRITERS}))
    token = mint_token(SECRET, subject="test", groups=[WRITERS])
    headers = {"Authorization": f"Bearer {token}"}
    apps = person_app(settings, auth), tenure_app(settings, auth)
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
    ):
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=a), base_url="http://api", headers=headers
            )
            for a in apps
        ]
        world = World(
            person=clients[0],
            tenure=clients[1],
            person_db=create_engine(settings.domain_database_url("person")),
            tenure_db=create_engine(settings.domain_database_url("tenure")),
            people=SourceClient("http://api", token=token, client=clients[0]),
            tenures=SourceClient("http://api", token=token, client=clients[1]),
        )
        try:
            yield world
        finally:
            for client in clients:
                await client.aclose()
            await world.person_db.dispose()
            await world.tenure_db.dispose()


async def sql(engine: AsyncEngine, statement: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(statement)


async def member_row(world: World, tenure_id: str, person_id: str) -> dict[str, Any]:
    async with world.tenure_db.connect() as conn:
        row = (
            await conn.execute(
                select(household_members).where(
                    household_members.c.tenure_id == tenure_id,
                    household_members.c.person_id == person_id,
                )
            )
        ).mappings()
        return dict(row.one())


async def test_reconcile_reports_exactly_the_corrupted_field_and_fix_repairs_it(
    world: World,
) -> None:
    pid = await world.create_person()
    t1 = await world.create_tenure(member(pid, "Ms Ann Smyth"))
    t2 = await world.create_tenure(member(pid, "Ms Ann Smyth", isResponsible=False))
    await sql(
        world.tenure_db,
        update(household_members)
        .where(household_members.c.tenure_id == t1)
        .values(full_name="Ms Ann Smithe"),
    )
    subset = HouseholdMembers()

    report = await reconcile(subset, world.tenure_db, world.people)
    assert (report.checked, report.in_step, report.drifted, report.fixed) == (2, 1, 1, 0)
    assert report.findings == [
        Finding(pid, t1, "fullName", "Ms Ann Smithe", "Ms Ann Smyth", Status.DRIFTED)
    ]
    assert report.remaining == 1
    assert (await member_row(world, t1, pid))["full_name"] == "Ms Ann Smithe", "check wrote"

    fixed = await reconcile(subset, world.tenure_db, world.people, fix=True)
    assert (fixed.drifted, fixed.fixed, fixed.remaining) == (1, 1, 0)
    assert [f.status for f in fixed.findings] == [Status.FIXED]
    assert (await member_row(world, t1, pid))["full_name"] == "Ms Ann Smyth"
    assert (await member_row(world, t2, pid))["full_name"] == "Ms Ann Smyth"
    async with session_factory(world.tenure_db)() as s:
        versions = await VersionGuard("tenure.householdMembers").versions(
            s, source_id=pid, holder_id=t1
        )
    assert versions == {"fullName": 1}, "the fix was not written at the source's version"

    again = await reconcile(subset, world.tenure_db, world.people, fix=True)
    assert (again.checked, again.in_step, again.findings) == (2, 2, [])


async def test_a_copy_newer_than_the_source_read_is_never_overwritten(world: World) -> None:
    pid = await world.create_person()
    tid = await world.create_tenure(member(pid, "Ms Ann Smyth"))
    # An event at v2 applied to the copy, which the source read (at v1) does not show yet.
    await sql(
        world.tenure_db,
        update(household_members)
        .where(household_members.c.tenure_id == tid)
        .values(full_name="Ms Ann Newer"),
    )
    async with session_factory(world.tenure_db)() as s, s.begin():
        guard = VersionGuard("tenure.householdMembers")
        await guard.fresh(s, source_id=pid, holder_id=tid, version=2, fields=["fullName"])
    subset = HouseholdMembers()

    report = await reconcile(subset, world.tenure_db, world.people, fix=True)
    assert (report.newer, report.drifted, report.fixed, report.remaining) == (1, 0, 0, 0)
    assert report.findings == [
        Finding(pid, tid, "fullName", "Ms Ann Newer", "Ms Ann Smyth", Status.NEWER)
    ]
    assert (await member_row(world, tid, pid))["full_name"] == "Ms Ann Newer"

    # The same race decided at the fix itself: the guard moved on after the compare.
    async with session_factory(world.tenure_db)() as s:
        [copy] = await subset.copies(s, pid)
    written_copy = {**copy.values, "fullName": "Ms Ann Smyth"}
    async with session_factory(world.tenure_db)() as s, s.begin():
        written = await subset.fix(s, copy, written_copy, ["fullName"], 1)
    assert written == set()
    assert (await member_row(world, tid, pid))["full_name"] == "Ms Ann Newer"


async def test_the_named_tenant_of_an_ended_tenure_keeps_the_name_but_not_a_wrong_birth_date(
    world: World,
) -> None:
    pid = await world.create_person()
    tid = await world.create_tenure(
        member(pid, "Ms Ann Maiden", dob="1970-01-01"),
        startOfTenureDate="2001-01-01",
        endOfTenureDate="2010-01-01",
    )
    report = await reconcile(HouseholdMembers(), world.tenure_db, world.people, fix=True)
    assert [(f.field, f.status) for f in report.findings] == [("dateOfBirth", Status.FIXED)]
    row = await member_row(world, tid, pid)
    assert row["full_name"] == "Ms Ann Maiden"
    assert row["date_of_birth"].isoformat() == "1980-02-01"


async def test_a_member_whose_person_is_gone_is_orphaned_and_kept(world: World) -> None:
    ghost = str(uuid.uuid4())
    tid = await world.create_tenure(member(ghost, "Nobody Here"))
    report = await reconcile(HouseholdMembers(), world.tenure_db, world.people, fix=True)
    assert (report.orphaned, report.fixed, report.remaining) == (1, 0, 1)
    [finding] = report.findings
    assert (finding.source_id, finding.holder_id, finding.field, finding.status) == (
        ghost,
        tid,
        None,
        Status.ORPHANED,
    )
    assert (await member_row(world, tid, ghost))["full_name"] == "Nobody Here"


def summary(tenure_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": tenure_id,
        "type": "Secure",
        "startDate": "2020-01-01",
        "endDate": None,
        "assetFullAddress": "1 High St",
        "assetId": "asset-1",
        "uprn": "100",
        "paymentReference": "PR-1",
        "propertyReference": "P1",
        **overrides,
    }


def copied(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary fields the subset compares (its own ``id`` is not a copy)."""
    return {k: v for k, v in summary.items() if k != "id"}


async def test_person_tenures_drift_is_fixed_and_a_summary_the_tenure_disowns_is_removed(
    world: World,
) -> None:
    pid = await world.create_person()
    kept = await world.create_tenure(member(pid, "Ms Ann Smyth"))
    disowned = await world.create_tenure()
    await sql(
        world.person_db,
        insert(person_tenures).values(
            [
                {"person_id": pid, "tenure_id": kept, "summary": summary(kept, uprn="999")},
                {"person_id": pid, "tenure_id": disowned, "summary": summary(disowned)},
            ]
        ),
    )
    subset = PersonTenures()

    report = await reconcile(subset, world.person_db, world.tenures)
    assert (report.checked, report.drifted, report.orphaned, report.remaining) == (2, 1, 1, 2)
    assert sorted(report.findings, key=lambda f: str(f.field)) == sorted(
        [
            Finding(disowned, pid, None, copied(summary(disowned)), None, Status.ORPHANED),
            Finding(kept, pid, "uprn", "999", "100", Status.DRIFTED),
        ],
        key=lambda f: str(f.field),
    )

    fixed = await reconcile(subset, world.person_db, world.tenures, fix=True)
    assert (fixed.fixed, fixed.remaining) == (2, 0)
    assert {f.status for f in fixed.findings} == {Status.FIXED, Status.REMOVED}
    async with world.person_db.connect() as conn:
        rows = dict(
            (await conn.execute(select(person_tenures.c.tenure_id, person_tenures.c.summary))).all()
        )
    assert rows == {kept: summary(kept)}
    async with session_factory(world.person_db)() as s:
        tombstone = await VersionGuard("person.tenures").versions(
            s, source_id=disowned, holder_id=pid
        )
    assert tombstone == {MEMBERSHIP: 1}, "the removal left no tombstone at the source's version"
    person = (await world.person.get(f"/api/v1/persons/{pid}")).json()
    assert [t["uprn"] for t in person["tenures"]] == ["100"]

    again = await reconcile(subset, world.person_db, world.tenures)
    assert (again.checked, again.in_step, again.findings) == (1, 1, [])


async def test_a_summary_readded_after_the_read_is_not_removed(world: World) -> None:
    pid = await world.create_person()
    tid = await world.create_tenure()
    await sql(
        world.person_db,
        insert(person_tenures).values(person_id=pid, tenure_id=tid, summary=summary(tid)),
    )
    async with session_factory(world.person_db)() as s, s.begin():
        await VersionGuard("person.tenures").fresh(
            s, source_id=tid, holder_id=pid, version=2, fields=[MEMBERSHIP]
        )
    report = await reconcile(PersonTenures(), world.person_db, world.tenures, fix=True)
    assert (report.newer, report.orphaned, report.remaining) == (1, 0, 0)
    async with world.person_db.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM person_tenures")) == 1


def test_an_unknown_subset_is_one_line_naming_the_known_ones_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["reconcile", "nope", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"tidings: unknown subset 'nope'; known: {', '.join(sorted(SUBSETS))}"
    )
    assert sorted(SUBSETS) == ["person-tenures", "tenure-household-members"]
