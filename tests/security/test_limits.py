"""The event size limit: a change whose event would be larger than the configured maximum is
refused at the API with a clear problem, and nothing of it is kept: no entity change, no
outbox row, nothing on the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tenure_service.tables import household_members, tenures
from tidings.brokers import connect
from tidings.db import create_engine, create_tables, session_factory
from tidings.errors import ConfigurationError, EventTooLarge
from tidings.events import Event, EventData, User
from tidings.events.codecs import MAX_EVENT_BYTES, encode
from tidings.outbox import Outbox
from tidings.outbox.table import outbox_table
from tidings.web import AuthSettings

from ..e2e.conftest import member, tenure_body
from .conftest import AUDIENCE, SECRET, WRITERS, Apis, open_apis

TENURE = "/api/v1/tenures"
LIMIT = 8 * 1024


@pytest.fixture
async def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Apis]:
    """The deployment with ``TIDINGS_MAX_EVENT_BYTES`` set to 8 KiB."""
    monkeypatch.setenv("TIDINGS_MAX_EVENT_BYTES", str(LIMIT))
    auth = AuthSettings(secret=SECRET, audience=AUDIENCE, write_groups=frozenset({WRITERS}))
    async with AsyncExitStack() as stack:
        yield await open_apis(stack, tmp_path, auth)


def big_household(count: int = 40) -> list[dict[str, object]]:
    return [member(f"p-{i:04d}", "N" * 400) for i in range(count)]


async def count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_create_above_the_limit_is_413_and_writes_nothing(small: Apis) -> None:
    tenure = small.clients["tenure"]
    response = await tenure.post(TENURE, json=tenure_body(*big_household()), headers=small.bearer())
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 413
    assert f"above the limit of {LIMIT} bytes" in problem["detail"]
    assert "nothing was changed" in problem["detail"]
    assert problem["errors"] == [{"field": "body", "message": "too large to publish"}]

    engine = create_engine(small.settings.domain_database_url("tenure"))
    try:
        assert await count(engine, tenures) == 0
        assert await count(engine, household_members) == 0
        assert await count(engine, outbox_table) == 0
    finally:
        await engine.dispose()
    broker = await connect(small.settings.broker_url)
    try:
        assert (await broker.depth("person-listener")).ready == 0
        assert (await broker.depth("activity-listener")).ready == 0
    finally:
        await broker.close()


async def test_update_above_the_limit_is_413_and_leaves_the_record_as_it_was(
    small: Apis,
) -> None:
    tenure = small.clients["tenure"]
    made = await tenure.post(TENURE, json=tenure_body(*big_household(4)), headers=small.bearer())
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    engine = create_engine(small.settings.domain_database_url("tenure"))
    try:
        rows_before = await count(engine, outbox_table)
        for i in range(4, 40):
            r = await tenure.patch(
                f"{TENURE}/{tid}/person/p-{i:04d}",
                json={"fullName": "N" * 400, "isResponsible": False},
                headers=small.bearer(),
            )
            if r.status_code != 204:
                break
        assert r.status_code == 413, r.text
        after = (await tenure.get(f"{TENURE}/{tid}", headers=small.bearer())).json()
        assert len(after["householdMembers"]) == i
        assert await count(engine, outbox_table) == rows_before + i - 4
        assert await count(engine, household_members) == i
    finally:
        await engine.dispose()


async def test_writes_within_the_limit_are_accepted(small: Apis) -> None:
    r = await small.clients["tenure"].post(
        TENURE, json=tenure_body(*big_household(2)), headers=small.bearer()
    )
    assert r.status_code == 201, r.text


def _event(blob_bytes: int) -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        version="v1",
        correlation_id="c-1",
        user=User(name="u", email="u@x"),
        entity_id="p-1",
        entity_version=1,
        event_data=EventData(new_data={"blob": "x" * blob_bytes}),
    )


def _sized(target: int) -> Event:
    """An event whose cloudevents body is exactly ``target`` bytes."""
    base = len(encode(_event(0)))
    return _event(target - base)


async def test_default_limit_is_256_kib_and_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIDINGS_MAX_EVENT_BYTES", raising=False)
    assert Outbox().max_event_bytes == MAX_EVENT_BYTES == 256 * 1024
    assert Outbox(max_event_bytes=1000).max_event_bytes == 1000
    monkeypatch.setenv("TIDINGS_MAX_EVENT_BYTES", "5000")
    assert Outbox().max_event_bytes == 5000
    for bad in ("0", "-1", "lots", "1e6"):
        monkeypatch.setenv("TIDINGS_MAX_EVENT_BYTES", bad)
        with pytest.raises(ConfigurationError, match="TIDINGS_MAX_EVENT_BYTES"):
            Outbox()
    monkeypatch.delenv("TIDINGS_MAX_EVENT_BYTES")

    engine = create_engine(f"sqlite:///{tmp_path}/d.db")
    await create_tables(engine)
    sessions = session_factory(engine)
    try:
        outbox = Outbox()
        async with sessions() as session, session.begin():
            await outbox.add(session, "person", _sized(MAX_EVENT_BYTES))
        with pytest.raises(EventTooLarge) as refused:
            async with sessions() as session, session.begin():
                await outbox.add(session, "person", _sized(MAX_EVENT_BYTES + 1))
        assert (refused.value.size, refused.value.limit) == (MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES)
        assert await count(engine, outbox_table) == 1
    finally:
        await engine.dispose()
