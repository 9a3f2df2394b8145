"""The reference deployment on one PostgreSQL database: ``tidings up --database-url``, each
domain in a schema of its own, driven over real HTTP. It proves that the services' own tables
(JSON, dates, timestamps), the outbox, the inbox and the subset guard all work on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tidings.db import create_engine

from ..conftest import require_service
from ..e2e.conftest import Deployment, eventually, member, person_body, start, stop, tenure_body

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def prefix() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def deployment(tmp_path: Path, prefix: str) -> Iterator[Deployment]:
    running = start(tmp_path / ".tidings", "--database-url", f"{URL}?schema={prefix}")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            stop(running)


@pytest.fixture
async def http(prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
    admin = create_engine(URL)
    async with admin.begin() as conn:
        for domain in ("person", "tenure", "activity", "alerts", "tidings"):
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}_{domain}" CASCADE'))
    await admin.dispose()


async def test_a_rename_reaches_the_tenure_and_the_history_with_every_domain_on_postgres(
    prefix: str, deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment

    async def get(url: str) -> dict[str, Any]:
        r = await http.get(url, headers=d.headers())
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    r = await http.post(f"{d.person}/api/v1/persons", json=person_body(), headers=d.headers())
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await http.post(
        f"{d.tenure}/api/v1/tenures",
        json=tenure_body(member(pid, "Ms Ann Smyth")),
        headers=d.headers(),
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(**{"If-Match": '"1"'}),
        json={"surname": "Smith", "dateOfBirth": "1981-03-04"},
    )
    assert r.status_code == 204, r.text
    tenure = await eventually(
        lambda: get(f"{d.tenure}/api/v1/tenures/{tid}"),
        lambda t: any(
            m["fullName"] == "Ms Ann Smith" and m["dateOfBirth"] == "1981-03-04"
            for m in t["householdMembers"]
        ),
    )
    assert tenure["startOfTenureDate"] == "2020-01-01"
    person = await eventually(
        lambda: get(f"{d.person}/api/v1/persons/{pid}"),
        lambda p: [t["id"] for t in p["tenures"]] == [tid],
    )
    assert person["dateOfBirth"] == "1981-03-04" and person["personTypes"] == ["Tenant"]
    history = await eventually(
        lambda: get(f"{d.activity}/api/v1/activityhistory?targetId={pid}"),
        lambda h: len(h["results"]) >= 2,
    )
    assert [a["eventType"] for a in history["results"]][:2] == [
        "PersonUpdatedEvent",
        "PersonCreatedEvent",
    ]
    admin = create_engine(URL)
    async with admin.connect() as conn:
        schemas = set(
            (
                await conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                    {"p": f"{prefix}%"},
                )
            ).scalars()
        )
        outbox = await conn.scalar(
            text(
                f'SELECT count(*) FROM "{prefix}_person".tidings_outbox WHERE published_at IS NULL'
            )
        )
    await admin.dispose()
    assert schemas == {
        f"{prefix}_person",
        f"{prefix}_tenure",
        f"{prefix}_activity",
        f"{prefix}_alerts",
        f"{prefix}_tidings",
    }
    assert outbox == 0
