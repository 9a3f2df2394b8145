"""One trace spans the API and the listener: a request with a ``traceparent`` to the real
Person API (uvicorn on loopback), its event through the outbox, the relay and the embedded
SQLite broker, and a listener runtime applying it: the listener's span belongs to the
request's trace and its parent chain reaches the API's SERVER span."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once
from sqlalchemy.ext.asyncio import AsyncSession

from housing_contracts import PERSON_TOPIC
from person_service.api import create_app
from tidings.brokers import connect
from tidings.config import Settings
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event
from tidings.listener import Listener, ListenerRuntime, Outcome
from tidings.topology import Subscription, Topology
from tidings.web import AuthSettings, mint_token

SECRET = "s" * 32
SUB = Subscription(
    name="trace-listener",
    topics=(PERSON_TOPIC,),
    event_types=("PersonCreatedEvent", "PersonUpdatedEvent"),
)
CLIENT_SPAN = {"create": "00f067aa0ba902b7", "rename": "b7ad6b7169203331"}
TRACES = {
    "create": "4bf92f3577b34da6a3ce929d0e0e4736",
    "rename": "0af7651916cd43dd8448eb211c80319c",
}
STATUS = {"create": 201, "rename": 204}


def _set_provider(provider: Any) -> None:
    # The API lets a process set its provider once; tests reset it the way
    # opentelemetry-test-utils' reset_trace_globals does, so no other test sees it.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = provider  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _set_provider(provider)
    try:
        yield exporter
    finally:
        _set_provider(None)
        provider.shutdown()


@pytest.fixture
async def person_api(tmp_path: Path) -> AsyncIterator[str]:
    """The Person API on a loopback port, its relay publishing to ``<tmp>/broker.db``."""
    settings = Settings(home=tmp_path, broker_url=f"sqlite:///{tmp_path}/broker.db")
    async with await connect(settings.broker_url) as broker:
        await broker.declare(Topology.build([PERSON_TOPIC], [SUB]))
    app = create_app(settings, AuthSettings(secret=SECRET, write_groups=frozenset({"w"})))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", ws="none", http="h11", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the Person API did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def traceparent(request: str) -> str:
    return f"00-{TRACES[request]}-{CLIENT_SPAN[request]}-01"


async def test_listener_work_joins_the_trace_of_the_request_that_caused_it(
    spans: InMemorySpanExporter, person_api: str, tmp_path: Path
) -> None:
    token = mint_token(SECRET, subject="u1", name="Ann", email="ann@example.org", groups=["w"])
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=person_api, headers=auth) as client:
        created = await client.post(
            "/api/v1/persons",
            headers={"traceparent": traceparent("create")},
            json={
                "title": "Ms",
                "firstName": "Ann",
                "surname": "Smyth",
                "dateOfBirth": "1980-02-01",
                "personTypes": ["Tenant"],
            },
        )
        assert created.status_code == 201, created.text
        person = created.json()["id"]
        renamed = await client.patch(
            f"/api/v1/persons/{person}",
            headers={"traceparent": traceparent("rename"), "If-Match": '"1"'},
            json={"surname": "Smith"},
        )
        assert renamed.status_code == 204, renamed.text

    handled: dict[str, trace.SpanContext] = {}
    listener = Listener(SUB.name)

    @listener.on("PersonCreatedEvent", "PersonUpdatedEvent")
    async def remember(event: Event, session: AsyncSession) -> None:
        handled[event.event_type] = trace.get_current_span().get_span_context()

    engine = create_engine(f"sqlite:///{tmp_path}/listener.db")
    await create_tables(engine)
    async with await connect(f"sqlite:///{tmp_path}/broker.db") as broker:
        runtime = ListenerRuntime(
            listener, broker=broker, subscription=SUB, sessions=session_factory(engine)
        )
        task = asyncio.create_task(runtime.run())
        try:
            async with asyncio.timeout(30):
                while runtime.stats[Outcome.APPLIED] < 2:
                    await asyncio.sleep(0.02)
        finally:
            runtime.stop()
            await task
    await engine.dispose()

    finished = {s.context.span_id: s for s in spans.get_finished_spans() if s.context}
    for request, event_type in (("create", "PersonCreatedEvent"), ("rename", "PersonUpdatedEvent")):
        consumer = next(
            s
            for s in finished.values()
            if s.kind is SpanKind.CONSUMER and s.name == f"{SUB.name} process {event_type}"
        )
        assert consumer.context is not None
        assert handled[event_type] == consumer.context, "the handler runs inside the span"
        assert f"{consumer.context.trace_id:032x}" == TRACES[request]
        chain = ancestry(consumer, finished)
        kinds = [s.kind for s in chain]
        assert SpanKind.PRODUCER in kinds, [s.name for s in chain]
        server = chain[-1]
        assert server.kind is SpanKind.SERVER, [s.name for s in chain]
        assert server.parent is not None and server.parent.is_remote
        assert f"{server.parent.span_id:016x}" == CLIENT_SPAN[request]
        assert server.attributes is not None
        assert server.attributes["http.response.status_code"] == STATUS[request]


def ancestry(span: ReadableSpan, finished: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """``span``'s recorded ancestors, nearest first, up to the one whose parent was not
    recorded here (the client's)."""
    chain: list[ReadableSpan] = []
    while span.parent is not None and span.parent.span_id in finished:
        span = finished[span.parent.span_id]
        chain.append(span)
    return chain
