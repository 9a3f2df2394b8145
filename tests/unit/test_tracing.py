"""W3C trace context: the outbox writes the current span's ``traceparent`` as a header, the
listener runs its handler in a CONSUMER span continuing it, an API request continues the
caller's; malformed values are ignored, and without OpenTelemetry nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidings import tracing
from tidings.brokers.base import Message
from tidings.brokers.memory import MemoryBroker
from tidings.events import Event, EventData
from tidings.listener import Listener, ListenerRuntime, Outcome
from tidings.outbox import Outbox, outbox_table
from tidings.testing import drain, event_message
from tidings.topology import Subscription, Topology
from tidings.web import AuthSettings, TraceContextMiddleware, install

from .conftest import effects

SUB = Subscription(name="copy", topics=("person",), in_flight=4)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

HOSTILE = [
    "",
    "garbage",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    f"00-{'0' * 32}-{PARENT_ID}-01",
    f"00-{TRACE_ID}-{'0' * 16}-01",
    f"ff-{TRACE_ID}-{PARENT_ID}-01",
    f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
    f"00-{TRACE_ID}-{PARENT_ID}-01\r\nx-injected: 1",
    f"00-{TRACE_ID}-{PARENT_ID}-0\u0661",
    "00-" + "a" * 5000 + "-" + PARENT_ID + "-01",
    "\x00" * 600,
]


def _set_provider(provider: Any) -> None:
    # The API lets a process set its provider once; tests reset it the way
    # opentelemetry-test-utils' reset_trace_globals does, so no other test sees it.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = provider  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A configured SDK whose finished spans the test reads."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _set_provider(provider)
    try:
        yield exporter
    finally:
        _set_provider(None)
        provider.shutdown()


def person_event(entity: str = "p1") -> Event:
    return Event(
        event_type="PersonUpdatedEvent",
        source_domain="Person",
        source_system="PersonAPI",
        entity_id=entity,
        entity_version=1,
        event_data=EventData(new_data={"firstName": "Ann"}),
    )


def traced_message(event: Event, traceparent: object, tracestate: object = None) -> Message:
    plain = event_message(event)
    headers: dict[str, Any] = {**plain.headers, "traceparent": traceparent}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    return Message(plain.id, plain.event_type, plain.key, plain.body, headers)


async def consume(
    sessions: async_sessionmaker[AsyncSession], messages: list[Message], batch_size: int = 1
) -> tuple[Any, list[trace.SpanContext]]:
    """Run the listener runtime over ``messages``; the span context each handler ran in."""
    seen: list[trace.SpanContext] = []
    listener = Listener("copy")

    @listener.on("PersonUpdatedEvent")
    async def copy(event: Event, session: AsyncSession) -> None:
        seen.append(trace.get_current_span().get_span_context())
        await session.execute(
            insert(effects).values(event_id=str(event.id), entity_id=event.entity_id)
        )

    async with MemoryBroker() as broker:
        await broker.declare(Topology.build(["person"], [SUB]))
        await broker.publish("person", messages)
        runtime = ListenerRuntime(
            listener, broker=broker, subscription=SUB, sessions=sessions, batch_size=batch_size
        )
        stats = await drain(runtime)
    return stats, seen


def only(spans: InMemorySpanExporter, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.kind is kind]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


@pytest.mark.parametrize("batch_size", [1, 8], ids=["batch1", "batch8"])
async def test_handler_runs_in_a_consumer_span_continuing_the_delivery_traceparent(
    spans: InMemorySpanExporter, sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    event = person_event()
    stats, seen = await consume(sessions, [traced_message(event, TRACEPARENT)], batch_size)

    assert stats[Outcome.APPLIED] == 1
    span = only(spans, SpanKind.CONSUMER)
    assert span.name == "copy process PersonUpdatedEvent"
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID and span.parent.is_remote
    assert seen == [span.context]
    assert span.attributes is not None
    assert span.attributes["messaging.consumer.group.name"] == "copy"
    assert span.attributes["messaging.message.id"] == str(event.id)
    assert span.attributes["tidings.correlation_id"] == event.correlation_id


async def test_failing_handler_marks_its_consumer_span_failed(
    spans: InMemorySpanExporter, sessions: async_sessionmaker[AsyncSession]
) -> None:
    listener = Listener("copy")

    @listener.on("PersonUpdatedEvent")
    async def fail(event: Event, session: AsyncSession) -> None:
        raise ValueError("no")

    sub = SUB.model_copy(update={"max_attempts": 1})
    async with MemoryBroker() as broker:
        await broker.declare(Topology.build(["person"], [sub]))
        await broker.publish("person", [traced_message(person_event(), TRACEPARENT)])
        stats = await drain(
            ListenerRuntime(listener, broker=broker, subscription=sub, sessions=sessions)
        )

    assert stats[Outcome.DEAD_LETTERED] == 1
    span = only(spans, SpanKind.CONSUMER)
    assert span.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


async def test_outbox_stores_the_traceparent_of_a_producer_span_child_of_the_current_one(
    spans: InMemorySpanExporter, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    event = person_event()
    with trace.get_tracer("test").start_as_current_span("request") as request:
        async with sessions() as session, session.begin():
            await Outbox().add(session, "person", event)

    producer = only(spans, SpanKind.PRODUCER)
    assert producer.name == "person create PersonUpdatedEvent"
    assert producer.parent == request.get_span_context()
    assert producer.context is not None
    headers = await stored_headers(engine)
    assert headers["traceparent"] == (
        f"00-{producer.context.trace_id:032x}-{producer.context.span_id:016x}"
        f"-{producer.context.trace_flags:02x}"
    )
    assert headers["correlation-id"] == event.correlation_id


async def test_outbox_outside_any_trace_writes_no_trace_headers(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session, session.begin():
        await Outbox().add(session, "person", person_event())

    assert set(await stored_headers(engine)) == {"content-type", "correlation-id"}


async def test_without_an_sdk_the_incoming_traceparent_passes_through_to_new_events(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert not tracing.recording()
    listener = Listener("copy")
    outbox = Outbox()

    @listener.on("PersonUpdatedEvent")
    async def chain(event: Event, session: AsyncSession) -> None:
        await outbox.add(session, "person", person_event("p2"))

    async with MemoryBroker() as broker:
        await broker.declare(Topology.build(["person"], [SUB]))
        await broker.publish("person", [traced_message(person_event(), TRACEPARENT, "k=v")])
        stats = await drain(
            ListenerRuntime(listener, broker=broker, subscription=SUB, sessions=sessions)
        )

    assert stats[Outcome.APPLIED] == 1
    headers = await stored_headers(engine)
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "k=v"


@pytest.mark.parametrize("value", [*HOSTILE, 42, None, b"00", ["x"]], ids=repr)
async def test_malformed_traceparent_is_ignored_and_the_event_still_applied(
    spans: InMemorySpanExporter, sessions: async_sessionmaker[AsyncSession], value: object
) -> None:
    message = traced_message(person_event(), value, tracestate="\x00" * 10_000)
    stats, seen = await consume(sessions, [message])

    assert stats[Outcome.APPLIED] == 1
    span = only(spans, SpanKind.CONSUMER)
    assert span.parent is None, "a malformed traceparent starts a new trace"
    assert span.context is not None and f"{span.context.trace_id:032x}" != TRACE_ID
    assert seen == [span.context]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_extract_ignores_what_is_not_a_w3c_traceparent(value: str) -> None:
    assert tracing.extract(value, "\x00bad state") is None


def test_extract_reads_a_valid_traceparent_and_its_tracestate() -> None:
    context = tracing.extract(TRACEPARENT, "vendor=opaque")
    assert context is not None
    remote = trace.get_current_span(context).get_span_context()
    assert (f"{remote.trace_id:032x}", f"{remote.span_id:016x}") == (TRACE_ID, PARENT_ID)
    assert remote.trace_state.get("vendor") == "opaque"


def test_no_traceparent_and_no_sdk_starts_no_span() -> None:
    class Delivery:
        message = Message("1", "PersonUpdatedEvent", "p1", b"{}", {})

    with tracing.handling(Delivery(), person_event()) as entered:  # type: ignore[arg-type]
        assert entered is None
        assert trace.get_current_span() is trace.INVALID_SPAN
    with tracing.publishing("person", person_event()) as headers:
        assert dict(headers) == {}


# --- the request's span ---------------------------------------------------------------


def starlette_app(seen: list[trace.SpanContext]) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        seen.append(trace.get_current_span().get_span_context())
        return JSONResponse({}, headers={"x-correlation-id": "cid-1"})

    app = Starlette(routes=[Route("/things/{id}", endpoint, methods=["PATCH"])])
    app.add_middleware(TraceContextMiddleware)
    return app


async def call(app: Any, headers: list[tuple[str, str]]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        return await client.patch("/things/7", headers=headers)


async def test_request_runs_in_a_server_span_continuing_the_callers_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    seen: list[trace.SpanContext] = []
    response = await call(starlette_app(seen), [("traceparent", TRACEPARENT)])

    assert response.status_code == 200
    span = only(spans, SpanKind.SERVER)
    assert span.name == "PATCH /things/{id}"
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert seen == [span.context]
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["tidings.correlation_id"] == "cid-1"


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)],
        *([("traceparent", v)] for v in HOSTILE if v.isascii() and "\r" not in v),
    ],
    ids=repr,
)
async def test_request_with_a_malformed_or_repeated_traceparent_starts_a_new_trace(
    spans: InMemorySpanExporter, headers: list[tuple[str, str]]
) -> None:
    response = await call(starlette_app([]), headers)

    assert response.status_code == 200
    span = only(spans, SpanKind.SERVER)
    assert span.parent is None
    assert span.context is not None and f"{span.context.trace_id:032x}" != TRACE_ID


async def test_request_without_sdk_or_traceparent_passes_through_untraced() -> None:
    seen: list[trace.SpanContext] = []
    response = await call(starlette_app(seen), [])

    assert response.status_code == 200
    assert seen == [trace.INVALID_SPAN_CONTEXT]


async def test_installed_api_makes_exactly_one_server_span_with_the_correlation_id(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI()
    install(app, auth=AuthSettings(secret="s" * 32), name="traced-api")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        response = await client.get(
            "/health", headers={"traceparent": TRACEPARENT, "x-correlation-id": "cid-9"}
        )

    assert response.status_code == 200
    span = only(spans, SpanKind.SERVER)
    assert span.context is not None and f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.attributes is not None
    assert span.attributes["tidings.correlation_id"] == "cid-9"


# --- without OpenTelemetry ---------------------------------------------------------------

WITHOUT_OTEL = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    sys.modules["opentelemetry"] = None  # as if the extra were not installed

    from sqlalchemy import select
    from tidings import tracing
    from tidings.brokers.base import Message
    from tidings.brokers.memory import MemoryBroker
    from tidings.db import create_engine, create_tables, session_factory
    from tidings.events import Event
    from tidings.listener import Listener, ListenerRuntime, Outcome
    from tidings.outbox import Outbox, Relay, outbox_table
    from tidings.testing import drain
    from tidings.topology import Subscription, Topology

    assert not tracing.ENABLED and not tracing.recording()
    assert tracing.extract("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is None

    async def main() -> None:
        sub = Subscription(name="copy", topics=("person",))
        engine = create_engine(f"sqlite:///{tempfile.mkdtemp()}/d.db")
        await create_tables(engine)
        sessions = session_factory(engine)
        outbox, applied = Outbox(), []
        async with MemoryBroker() as broker:
            await broker.declare(Topology.build(["person"], [sub]))
            event = Event(event_type="E", source_domain="D", source_system="S", entity_id="1")
            async with sessions() as session, session.begin():
                await outbox.add(session, "person", event)
            async with engine.connect() as conn:
                headers = (await conn.execute(select(outbox_table.c.headers))).scalar_one()
            assert set(headers) == {"content-type", "correlation-id"}, headers
            await Relay(engine, broker, outbox=outbox).run_once()
            listener = Listener("copy")

            @listener.on("E")
            async def apply(event, session):
                applied.append(event.id)

            stats = await drain(ListenerRuntime(listener, broker=broker, subscription=sub,
                                                sessions=sessions, batch_size=BATCH))
            assert stats[Outcome.APPLIED] == 1 and applied == [event.id], stats
        await engine.dispose()

    asyncio.run(main())
    assert "opentelemetry.trace" not in sys.modules
    print("ok")
    """
)


@pytest.mark.parametrize("batch_size", [1, 8], ids=["batch1", "batch8"])
def test_without_opentelemetry_installed_events_flow_untraced(batch_size: int) -> None:
    script = WITHOUT_OTEL.replace("BATCH", str(batch_size))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


async def stored_headers(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox_table.c.headers))).scalars().all()
    assert len(rows) == 1
    return dict(rows[0])


def test_root_span_without_traceparent_when_an_sdk_is_configured(
    spans: InMemorySpanExporter,
) -> None:
    class Delivery:
        message = Message("1", "PersonUpdatedEvent", "p1", b"{}", {})
        subscription = "copy"
        topic = "person"
        attempt = 1

    with (
        trace.get_tracer("test").start_as_current_span("unrelated"),
        tracing.handling(Delivery(), person_event()),  # type: ignore[arg-type]
    ):
        pass

    span = only(spans, SpanKind.CONSUMER)
    assert span.parent is None, "the worker's own context never becomes the parent"
