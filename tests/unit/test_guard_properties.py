"""Properties of the version guard beyond reordering and duplicates
(tests/unit/test_subsets_guard.py): it decides exactly like a per-field maximum of committed
versions; deliveries that fail after writing (rolled back, retried later) and full re-reads
of the source mixed in at any point still end as in-order, once-only delivery."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, MetaData, String, Table, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings.db import create_engine, create_tables, session_factory
from tidings.subsets import VersionGuard, apply_changes

Sessions = async_sessionmaker[AsyncSession]
FIELDS = ("title", "firstName", "surname", "dateOfBirth")
PEOPLE = ("p1", "p2")
HOLDERS = ("t1", "t2")
INITIAL = dict.fromkeys(FIELDS, "initial")
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

copies_metadata = MetaData()
copies = Table(
    "guarded_copies",
    copies_metadata,
    Column("holder_id", String(20), primary_key=True),
    Column("source_id", String(20), primary_key=True),
    Column("data", JSON, nullable=False),
)
guard = VersionGuard("tenure.householdMembers")


@asynccontextmanager
async def database() -> AsyncIterator[Sessions]:
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{Path(folder) / 'listener.db'}")
        try:
            await create_tables(engine, copies_metadata)
            yield session_factory(engine)
        finally:
            await engine.dispose()


class Failed(Exception):
    """A handler failure after the guard and the copy were written."""


async def apply(
    sessions: Sessions, person: str, version: int, changes: dict[str, Any], *, fail: bool
) -> None:
    """What a handler does with one event, in one transaction; ``fail`` raises after every
    write, so that the transaction rolls back."""
    async with sessions() as s, s.begin():
        for holder in HOLDERS:
            row = await s.execute(
                select(copies.c.data).where(
                    copies.c.holder_id == holder, copies.c.source_id == person
                )
            )
            current = row.scalar_one_or_none() or dict(INITIAL)
            fresh = await guard.fresh(
                s, source_id=person, holder_id=holder, version=version, fields=changes
            )
            data = apply_changes(current, changes, fresh)
            statement = sqlite.insert(copies).values(holder_id=holder, source_id=person, data=data)
            await s.execute(
                statement.on_conflict_do_update(
                    index_elements=["holder_id", "source_id"], set_={"data": data}
                )
            )
        if fail:
            raise Failed


async def stored(sessions: Sessions) -> dict[tuple[str, str], dict[str, Any]]:
    async with sessions() as s:
        rows = (await s.execute(select(copies))).mappings().all()
    return {(r["holder_id"], r["source_id"]): r["data"] for r in rows}


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, int, dict[str, str]]]:
    """Partial updates of each person at rising versions (gaps allowed)."""
    events = []
    for person in PEOPLE:
        version = 0
        for _ in range(draw(st.integers(1, 8))):
            version += draw(st.integers(1, 3))
            changes = draw(
                st.dictionaries(st.sampled_from(FIELDS), st.text("abc", max_size=2), min_size=1)
            )
            events.append((person, version, changes))
    return events


def in_order(
    events: list[tuple[str, int, dict[str, str]]],
) -> dict[tuple[str, str], dict[str, Any]]:
    state = {p: dict(INITIAL) for p in PEOPLE}
    for person, _, changes in sorted(events, key=lambda e: (e[0], e[1])):
        state[person].update(changes)
    return {(h, p): state[p] for h in HOLDERS for p in PEOPLE}


@PROPERTY
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(PEOPLE),
            st.sampled_from(HOLDERS),
            st.integers(0, 6),
            st.sets(st.sampled_from(FIELDS), min_size=1),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
async def test_guard_decides_like_a_per_field_maximum_of_committed_versions(
    steps: list[tuple[str, str, int, set[str], bool]],
) -> None:
    model: dict[tuple[str, str, str], int] = {}
    async with database() as sessions:
        for person, holder, version, fields, commits in steps:
            expected = {f for f in fields if model.get((person, holder, f), -1) <= version}
            async with sessions() as s:
                transaction = await s.begin()
                fresh = await guard.fresh(
                    s, source_id=person, holder_id=holder, version=version, fields=fields
                )
                if commits:
                    await transaction.commit()
                else:
                    await transaction.rollback()
            assert fresh == expected
            if commits:
                model.update({(person, holder, f): version for f in fresh})
        async with sessions() as s:
            for person in PEOPLE:
                for holder in HOLDERS:
                    versions = await guard.versions(s, source_id=person, holder_id=holder)
                    assert versions == {
                        f: v for (p, h, f), v in model.items() if (p, h) == (person, holder)
                    }


@PROPERTY
@given(events=histories(), data=st.data())
async def test_failures_rolled_back_and_retried_later_end_as_in_order(
    events: list[tuple[str, int, dict[str, str]]], data: st.DataObject
) -> None:
    """Each delivery may fail after writing (and roll back); a failed one comes back at any
    later point, as a retry does, until it succeeds. Duplicates and any order besides."""
    duplicates = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    queue = data.draw(st.permutations([*range(len(events)), *duplicates]))
    attempts = 0
    async with database() as sessions:
        while queue:
            index = queue.pop(0)
            attempts += 1
            fail = attempts < 200 and data.draw(st.booleans(), label=f"fail #{attempts}")
            try:
                await apply(sessions, *events[index], fail=fail)
            except Failed:
                queue.insert(data.draw(st.integers(0, len(queue))), index)
        assert await stored(sessions) == in_order(events)


@PROPERTY
@given(events=histories(), data=st.data())
async def test_rereads_of_the_source_mixed_in_anywhere_end_as_in_order(
    events: list[tuple[str, int, dict[str, str]]], data: st.DataObject
) -> None:
    """A re-read carries every field as the source held them at its version (the version of
    one of its updates); any number of them, in any order with the updates, repair rather
    than regress."""
    snapshots = []
    for person in PEOPLE:
        state = dict(INITIAL)
        for who, version, changes in sorted(events, key=lambda e: (e[0], e[1])):
            if who == person:
                state.update(changes)
                snapshots.append((person, version, dict(state)))
    rereads = data.draw(st.lists(st.sampled_from(snapshots), max_size=6))
    deliveries = data.draw(st.permutations([*events, *rereads]))
    async with database() as sessions:
        for person, version, changes in deliveries:
            await apply(sessions, person, version, changes, fail=False)
        assert await stored(sessions) == in_order(events)
