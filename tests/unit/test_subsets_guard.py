"""The per-field version guard: an older event never overwrites newer data in a subset, and
any delivery order (with duplicates) ends as in-order, once-only delivery would."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, MetaData, String, Table, delete, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tidings.db import create_engine, create_tables, session_factory
from tidings.events.model import MAX_ENTITY_VERSION
from tidings.listener import Retry
from tidings.subsets import MEMBERSHIP, VersionGuard, apply_changes, subset_versions_table

Sessions = async_sessionmaker[AsyncSession]

copies_metadata = MetaData()
copies = Table(
    "subset_copies",
    copies_metadata,
    Column("holder_id", String(200), primary_key=True),
    Column("source_id", String(200), primary_key=True),
    Column("data", JSON, nullable=False),
)

guard = VersionGuard("tenure.householdMembers")


async def _fresh(session: AsyncSession, version: int, *fields: str, holder: str = "t1") -> set[str]:
    return await guard.fresh(
        session, source_id="p1", holder_id=holder, version=version, fields=fields
    )


# --- the guard on its own ----------------------------------------------------------------


async def test_first_write_of_every_field_is_fresh_and_recorded(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        assert await _fresh(s, 3, "fullName", "dateOfBirth") == {"fullName", "dateOfBirth"}
    async with sessions() as s:
        versions = await guard.versions(s, source_id="p1", holder_id="t1")
    assert versions == {"fullName": 3, "dateOfBirth": 3}


async def test_older_version_is_refused_per_field_only(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await _fresh(s, 3, "surname")
        # v2 changed firstName and surname: its surname is stale, its firstName is not.
        assert await _fresh(s, 2, "firstName", "surname") == {"firstName"}
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {
            "surname": 3,
            "firstName": 2,
        }


async def test_equal_version_is_fresh_again_so_a_reread_can_repair(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await _fresh(s, 5, "fullName")
        assert await _fresh(s, 5, "fullName") == {"fullName"}
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {"fullName": 5}


async def test_stored_version_is_never_lowered(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await _fresh(s, 9, "fullName")
        assert await _fresh(s, 4, "fullName", "title") == {"title"}
        assert await _fresh(s, 10, "fullName") == {"fullName"}
        assert await _fresh(s, 0, "fullName", "title") == set()
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {
            "fullName": 10,
            "title": 4,
        }


async def test_each_copy_and_each_subset_is_guarded_on_its_own(sessions: Sessions) -> None:
    other_subset = VersionGuard("person.tenures")
    async with sessions() as s, s.begin():
        await _fresh(s, 8, "fullName", holder="t1")
        # The same person copied into another tenure (say, added later) has its own rows.
        assert await _fresh(s, 2, "fullName", holder="t2") == {"fullName"}
        assert await guard.fresh(
            s, source_id="p2", holder_id="t1", version=1, fields=["fullName"]
        ) == {"fullName"}
        assert await other_subset.fresh(
            s, source_id="p1", holder_id="t1", version=1, fields=["fullName"]
        ) == {"fullName"}
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {"fullName": 8}


async def test_rolled_back_transaction_records_nothing(sessions: Sessions) -> None:
    with pytest.raises(RuntimeError):
        async with sessions() as s, s.begin():
            assert await _fresh(s, 7, "fullName") == {"fullName"}
            raise RuntimeError("the subset write failed")
    async with sessions() as s, s.begin():
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {}
        assert await _fresh(s, 6, "fullName") == {"fullName"}


async def test_no_fields_writes_nothing(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        assert await _fresh(s, 1) == set()
        assert (await s.execute(select(subset_versions_table))).first() is None


@pytest.mark.parametrize("version", [-1, MAX_ENTITY_VERSION + 1, True])
async def test_version_outside_the_wire_range_is_rejected(sessions: Sessions, version: int) -> None:
    async with sessions() as s, s.begin():
        with pytest.raises(ValueError, match="version"):
            await _fresh(s, version, "fullName")


async def test_largest_wire_version_is_stored(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        assert await _fresh(s, MAX_ENTITY_VERSION, "fullName") == {"fullName"}
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {
            "fullName": MAX_ENTITY_VERSION
        }


async def test_forget_drops_the_holders_copies_only(sessions: Sessions) -> None:
    other_subset = VersionGuard("person.tenures")
    async with sessions() as s, s.begin():
        for source, holder in [("p1", "t1"), ("p2", "t1"), ("p1", "t2")]:
            await guard.fresh(s, source_id=source, holder_id=holder, version=1, fields=["a", "b"])
        await other_subset.fresh(s, source_id="p1", holder_id="t1", version=1, fields=["a"])
        assert await guard.forget(s, holder_id="t1", source_id="p2") == 2
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {"a": 1, "b": 1}
        assert await guard.forget(s, holder_id="t1") == 2
        assert await guard.versions(s, source_id="p1", holder_id="t1") == {}
        assert await guard.versions(s, source_id="p1", holder_id="t2") == {"a": 1, "b": 1}
        assert await other_subset.versions(s, source_id="p1", holder_id="t1") == {"a": 1}


def test_apply_changes_takes_only_fresh_fields_and_modifies_nothing() -> None:
    current = {"fullName": "Ann Lee", "dateOfBirth": "1990-01-01"}
    changes = {"fullName": "Ann Smith", "title": "Dr"}
    assert apply_changes(current, changes, {"title", "dateOfBirth"}) == {
        "fullName": "Ann Lee",
        "dateOfBirth": "1990-01-01",
        "title": "Dr",
    }
    assert current == {"fullName": "Ann Lee", "dateOfBirth": "1990-01-01"}
    assert changes == {"fullName": "Ann Smith", "title": "Dr"}


# --- a listener's handlers, written as the guard module documents them -------------------


async def _load(s: AsyncSession, holder: str, source: str) -> dict[str, Any] | None:
    row = await s.execute(
        select(copies.c.data).where(copies.c.holder_id == holder, copies.c.source_id == source)
    )
    data = row.scalar_one_or_none()
    return None if data is None else dict(data)


async def _store(s: AsyncSession, holder: str, source: str, data: dict[str, Any]) -> None:
    insert = sqlite.insert(copies).values(holder_id=holder, source_id=source, data=data)
    await s.execute(insert.on_conflict_do_update(set_={"data": insert.excluded.data}))


async def _update(
    s: AsyncSession, g: VersionGuard, holder: str, source: str, v: int, changes: dict[str, Any]
) -> None:
    current = await _load(s, holder, source)
    if current is None:
        stored = await g.versions(s, source_id=source, holder_id=holder)
        if stored.get(MEMBERSHIP, -1) > v:
            return  # removed after this update
        raise Retry("the copy's add has not arrived yet")
    fresh = await g.fresh(s, source_id=source, holder_id=holder, version=v, fields=changes)
    await _store(s, holder, source, apply_changes(current, changes, fresh))


async def _add(
    s: AsyncSession, g: VersionGuard, holder: str, source: str, v: int, data: dict[str, Any]
) -> None:
    fields = [MEMBERSHIP, *data]
    fresh = await g.fresh(s, source_id=source, holder_id=holder, version=v, fields=fields)
    if MEMBERSHIP in fresh:
        current = await _load(s, holder, source) or {}
        await _store(s, holder, source, apply_changes(current, data, fresh))


async def _remove(s: AsyncSession, g: VersionGuard, holder: str, source: str, v: int) -> None:
    stored = await g.versions(s, source_id=source, holder_id=holder)
    if max(stored.values(), default=v) <= v:
        await g.fresh(s, source_id=source, holder_id=holder, version=v, fields=[MEMBERSHIP])
        await s.execute(
            delete(copies).where(copies.c.holder_id == holder, copies.c.source_id == source)
        )


async def _copies(sessions: Sessions) -> dict[tuple[str, str], dict[str, Any]]:
    async with sessions() as s:
        rows = await s.execute(select(copies.c.holder_id, copies.c.source_id, copies.c.data))
        return {(h, src): dict(d) for h, src, d in rows}


@pytest.fixture
async def listener_sessions(engine: AsyncEngine) -> Sessions:
    """The listener's database: tidings' tables and the copies a test listener keeps."""
    await create_tables(engine, copies_metadata)
    return session_factory(engine)


async def test_removal_is_a_tombstone_an_older_add_cannot_undo(
    listener_sessions: Sessions,
) -> None:
    sessions = listener_sessions
    g = VersionGuard("person.tenures")
    async with sessions() as s, s.begin():
        await _add(s, g, "p1", "t1", 5, {"paymentReference": "A"})
    async with sessions() as s, s.begin():
        await _remove(s, g, "p1", "t1", 7)
    async with sessions() as s, s.begin():
        await _add(s, g, "p1", "t1", 6, {"paymentReference": "B"})  # late: must not re-add
    async with sessions() as s, s.begin():
        await _update(s, g, "p1", "t1", 6, {"paymentReference": "C"})  # late: skipped
    assert await _copies(sessions) == {}
    async with sessions() as s, s.begin():
        await _add(s, g, "p1", "t1", 8, {"paymentReference": "D"})
    assert await _copies(sessions) == {("p1", "t1"): {"paymentReference": "D"}}


async def test_removal_older_than_a_later_update_is_stale(listener_sessions: Sessions) -> None:
    """add v3, update v6, then the late removal v4 (a re-add v5 must have followed it)."""
    sessions = listener_sessions
    g = VersionGuard("person.tenures")
    async with sessions() as s, s.begin():
        await _add(s, g, "p1", "t1", 3, {"type": "Secure", "ref": "A"})
        await _update(s, g, "p1", "t1", 6, {"ref": "F"})
        await _remove(s, g, "p1", "t1", 4)
        await _add(s, g, "p1", "t1", 5, {"type": "Introductory", "ref": "E"})
    assert await _copies(sessions) == {("p1", "t1"): {"type": "Introductory", "ref": "F"}}


# --- the property: any order, any duplicates, same end as in-order once-only delivery -----

FIELDS = ["title", "firstName", "surname", "fullName", "dateOfBirth"]
values = st.text(alphabet="abcXYZ", max_size=3)


@asynccontextmanager
async def _fresh_database() -> AsyncIterator[Sessions]:
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{Path(folder) / 'listener.db'}")
        try:
            await create_tables(engine, copies_metadata)
            yield session_factory(engine)
        finally:
            await engine.dispose()


def _delivery_order(data: st.DataObject, count: int) -> list[int]:
    """Every event at least once, some twice, in any order."""
    duplicates = data.draw(st.lists(st.integers(0, count - 1), max_size=count))
    return data.draw(st.permutations([*range(count), *duplicates]))


@dataclass
class _Update:
    person: str
    version: int
    changes: dict[str, str] = field(default_factory=dict)


@st.composite
def person_updates(draw: st.DrawFn) -> list[_Update]:
    """Partial updates of several persons, each at the next version of its person."""
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["p1", "p2", "p3"]),
                st.dictionaries(st.sampled_from(FIELDS), values, min_size=1),
            ),
            min_size=1,
            max_size=25,
        )
    )
    latest: dict[str, int] = {}
    updates = []
    for person, changes in steps:
        latest[person] = latest.get(person, 0) + draw(st.integers(1, 3))
        updates.append(_Update(person, latest[person], changes))
    return updates


HOLDERS = {"p1": ["t1", "t2"], "p2": ["t1"], "p3": ["t2", "t3"]}


@settings(max_examples=50, deadline=None)
@given(updates=person_updates(), data=st.data())
async def test_partial_updates_in_any_order_with_duplicates_end_as_in_order(
    updates: list[_Update], data: st.DataObject
) -> None:
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for u in updates:
        for holder in HOLDERS[u.person]:
            expected[(holder, u.person)] = {**expected.get((holder, u.person), {}), **u.changes}

    g = VersionGuard("tenure.householdMembers")
    async with _fresh_database() as sessions:
        for i in _delivery_order(data, len(updates)):
            u = updates[i]
            async with sessions() as s, s.begin():
                for holder in HOLDERS[u.person]:
                    current = await _load(s, holder, u.person) or {}
                    fresh = await g.fresh(
                        s, source_id=u.person, holder_id=holder, version=u.version, fields=u.changes
                    )
                    await _store(s, holder, u.person, apply_changes(current, u.changes, fresh))
        assert await _copies(sessions) == expected


@dataclass
class _TenureEvent:
    kind: str  # "add", "remove" or "update"
    version: int
    person: str = ""
    data: dict[str, str] = field(default_factory=dict)
    members: Sequence[str] = ()


@st.composite
def tenure_history(draw: st.DrawFn) -> list[_TenureEvent]:
    """One tenure's events, each at the next version: members added (with the whole
    summary), removed, and the tenure's fields updated (listing the members at the time)."""
    state = {f: "initial" for f in FIELDS}
    members: set[str] = set()
    events = []
    for version in range(1, draw(st.integers(1, 12)) + 1):
        outside = sorted({"p1", "p2"} - members)
        kinds = (["add"] if outside else []) + ["update"] + (["remove"] if members else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "add":
            person = draw(st.sampled_from(outside))
            members.add(person)
            events.append(_TenureEvent("add", version, person, dict(state)))
        elif kind == "remove":
            person = draw(st.sampled_from(sorted(members)))
            members.discard(person)
            events.append(_TenureEvent("remove", version, person))
        else:
            changes = draw(st.dictionaries(st.sampled_from(FIELDS), values, min_size=1))
            state.update(changes)
            events.append(_TenureEvent("update", version, data=changes, members=sorted(members)))
    return events


def _in_order(events: list[_TenureEvent]) -> dict[tuple[str, str], dict[str, Any]]:
    result: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e.kind == "add":
            result[(e.person, "t1")] = dict(e.data)
        elif e.kind == "remove":
            del result[(e.person, "t1")]
        else:
            for person in e.members:
                result[(person, "t1")].update(e.data)
    return result


@settings(max_examples=50, deadline=None)
@given(events=tenure_history(), data=st.data())
async def test_membership_and_updates_in_any_order_end_as_in_order(
    events: list[_TenureEvent], data: st.DataObject
) -> None:
    g = VersionGuard("person.tenures")
    queue = [events[i] for i in _delivery_order(data, len(events))]
    async with _fresh_database() as sessions:
        for _ in range(len(queue) * len(queue) + 1):
            if not queue:
                break
            e = queue.pop(0)
            try:
                async with sessions() as s, s.begin():
                    if e.kind == "add":
                        await _add(s, g, e.person, "t1", e.version, e.data)
                    elif e.kind == "remove":
                        await _remove(s, g, e.person, "t1", e.version)
                    else:
                        for person in e.members:
                            await _update(s, g, person, "t1", e.version, e.data)
            except Retry:
                queue.append(e)  # rolled back; delivered again later
        assert not queue, "retried events never settled"
        assert await _copies(sessions) == _in_order(events)
