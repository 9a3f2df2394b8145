"""The tenure-listener's subset ends equal to in-order, once-only delivery of person events,
whatever the order and however many duplicates the broker delivers."""

from __future__ import annotations

import asyncio
import random
import tempfile
from datetime import date
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from tenure_service.listener import SUBSCRIPTION, build_listener
from tenure_service.tables import household_members, metadata, tenures
from tidings.brokers.memory import MemoryBroker
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventData, utc_now
from tidings.listener import ListenerRuntime, Outcome
from tidings.subsets import SourceClient
from tidings.testing import drain, publish_events
from tidings.topology import Topology

MEMBERSHIPS = {"t1": ["p1", "p2"], "t2": ["p1", "p3"]}
FIELDS = ("fullName", "dateOfBirth")


def value(field: str, n: int) -> str:
    return f"Name {n}" if field == "fullName" else date(1950 + n % 50, 1 + n % 12, 1).isoformat()


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    events = []
    for person in ("p1", "p2", "p3"):
        for version in range(2, draw(st.integers(2, 8)) + 1):
            fields = draw(st.lists(st.sampled_from(FIELDS), min_size=1, unique=True))
            events.append(
                Event(
                    event_type="PersonUpdatedEvent",
                    source_domain="Person",
                    source_system="PersonAPI",
                    entity_id=person,
                    entity_version=version,
                    event_data=EventData(
                        old_data={},
                        new_data={f: value(f, version * 10 + i) for i, f in enumerate(fields)},
                    ),
                )
            )
    return events


def in_order(events: list[Event]) -> dict[str, dict[str, Any]]:
    final = {p: {"fullName": "Initial", "dateOfBirth": "1940-01-01"} for p in ("p1", "p2", "p3")}
    for event in sorted(events, key=lambda e: (e.entity_id, e.entity_version or 0)):
        final[event.entity_id].update(event.event_data.new_data or {})
    return final


async def deliver(events: list[Event], folder: str) -> dict[tuple[str, str], dict[str, Any]]:
    engine = create_engine(f"sqlite:///{folder}/tenure.db")
    await create_tables(engine, metadata)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        for tid, people in MEMBERSHIPS.items():
            await session.execute(
                insert(tenures).values(
                    id=tid, version_number=1, created_at=utc_now(), updated_at=utc_now()
                )
            )
            for i, pid in enumerate(people):
                await session.execute(
                    insert(household_members).values(
                        tenure_id=tid,
                        person_id=pid,
                        position=i,
                        type="Person",
                        full_name="Initial",
                        date_of_birth=date(1940, 1, 1),
                        is_responsible=False,
                    )
                )
    broker = MemoryBroker()
    await broker.declare(Topology.build(SUBSCRIPTION.topics, [SUBSCRIPTION]))
    await publish_events(broker, "person", events)
    async with SourceClient("http://127.0.0.1:9", token="unused") as unused:
        runtime = ListenerRuntime(
            build_listener(unused), broker=broker, subscription=SUBSCRIPTION, sessions=sessions
        )
        stats = await drain(runtime)
    assert stats[Outcome.DEAD_LETTERED] == 0 and stats[Outcome.RETRIED] == 0
    async with sessions() as session:
        rows = (await session.execute(select(household_members))).mappings().all()
    await broker.close()
    await engine.dispose()
    return {
        (r["tenure_id"], r["person_id"]): {
            "fullName": r["full_name"],
            "dateOfBirth": r["date_of_birth"].isoformat(),
        }
        for r in rows
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=streams(),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(0, 1000), max_size=10),
)
def test_any_order_with_duplicates_ends_as_in_order_once_only_delivery(
    events: list[Event], order: random.Random, duplicates: list[int]
) -> None:
    delivered = events + [events[i % len(events)] for i in duplicates]
    order.shuffle(delivered)
    with tempfile.TemporaryDirectory() as folder:
        copies = asyncio.run(deliver(delivered, folder))
    expected = in_order(events)
    assert copies == {(t, p): expected[p] for t, people in MEMBERSHIPS.items() for p in people}


async def test_thin_mode_copies_the_source_not_the_event(tmp_path: Any) -> None:
    """With reread, the listener trusts only the Person API: event data is ignored."""
    truth = {"p1": ("Ms Truth One", "1970-05-05", 9), "p2": ("Mr Truth Two", None, 4)}

    async def person_api(request: httpx.Request) -> httpx.Response:
        pid = request.url.path.rsplit("/", 1)[-1]
        assert request.headers["authorization"] == "Bearer service-token"
        assert request.headers["x-correlation-id"] == "cid-1"
        if pid not in truth:
            return httpx.Response(404)
        name, dob, version = truth[pid]
        return httpx.Response(
            200,
            json={"id": pid, "fullName": name, "dateOfBirth": dob},
            headers={"ETag": f'"{version}"'},
        )

    engine = create_engine(f"sqlite:///{tmp_path}/tenure.db")
    await create_tables(engine, metadata)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(
            insert(tenures).values(
                id="t1", version_number=1, created_at=utc_now(), updated_at=utc_now()
            )
        )
        for i, pid in enumerate(("p1", "p2", "p3")):
            await session.execute(
                insert(household_members).values(
                    tenure_id="t1",
                    person_id=pid,
                    position=i,
                    type="Person",
                    full_name="Old",
                    date_of_birth=None,
                    is_responsible=False,
                )
            )
    lies = [
        Event(
            event_type="PersonUpdatedEvent",
            source_domain="Person",
            source_system="PersonAPI",
            entity_id=pid,
            entity_version=1,
            correlation_id="cid-1",
            event_data=EventData(new_data={"fullName": "Lie"}),
        )
        for pid in ("p1", "p2", "p3")
    ]
    broker = MemoryBroker()
    await broker.declare(Topology.build(SUBSCRIPTION.topics, [SUBSCRIPTION]))
    await publish_events(broker, "person", lies)
    http = httpx.AsyncClient(transport=httpx.MockTransport(person_api), base_url="http://person")
    async with SourceClient("http://person", token="service-token", client=http) as people:
        runtime = ListenerRuntime(
            build_listener(people, reread=True),
            broker=broker,
            subscription=SUBSCRIPTION,
            sessions=sessions,
        )
        stats = await drain(runtime)
    await http.aclose()
    assert stats[Outcome.APPLIED] == 3
    async with sessions() as session:
        rows = (await session.execute(select(household_members))).mappings().all()
    copies = {r["person_id"]: (r["full_name"], r["date_of_birth"]) for r in rows}
    assert copies == {
        "p1": ("Ms Truth One", date(1970, 5, 5)),
        "p2": ("Mr Truth Two", None),
        "p3": ("Old", None),
    }
    await broker.close()
    await engine.dispose()
