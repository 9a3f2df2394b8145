"""W3C trace context through the event flow: from the HTTP request that caused a change,
through the outbox and the broker, into the listener's work (``pip install tidings[otel]``).

- An API request continues the caller's ``traceparent`` in a SERVER span
  (:class:`tidings.web.tracing.TraceContextMiddleware`, or FastAPI's own telemetry where it
  already made a span current).
- :meth:`tidings.outbox.Outbox.add` runs in a PRODUCER span ``<topic> create <event type>``
  and stores that span's ``traceparent`` (and ``tracestate``) as message headers, which the
  relay publishes with the body: every backend carries headers intact, and both codecs stay
  as they are.
- The listener runtime runs each handler in a CONSUMER span
  ``<subscription> process <event type>`` whose parent is the delivery's ``traceparent``, so
  the handler's own work (and any event it writes to its outbox) joins the request's trace.

Spans go to the global ``TracerProvider`` the application configures (the OpenTelemetry
SDK); tidings never configures one. Without a configured provider nothing is recorded, but a
``traceparent`` that came in is still passed on unchanged (W3C pass-through). Where no
``traceparent`` came in and no provider is configured, and where OpenTelemetry is not
installed at all, every function here does nothing and costs a check or two.

A ``traceparent`` or ``tracestate`` that is not a string, is longer than
:data:`MAX_HEADER_CHARS` or is malformed is ignored, as the W3C recommendation asks: the work
goes on in a new trace, and never fails because of a header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidings.brokers.base import Delivery
    from tidings.events import Event

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra ``otel`` is not installed
    ENABLED = False
else:
    ENABLED = True
    _PROPAGATOR = TraceContextTextMapPropagator()

__all__ = [
    "ENABLED",
    "MAX_HEADER_CHARS",
    "TRACEPARENT",
    "TRACESTATE",
    "extract",
    "handling",
    "publishing",
    "recording",
    "tracer",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_HEADER_CHARS = 512
"""Longest ``traceparent`` or ``tracestate`` value read; longer ones are ignored."""

_SYSTEM = "tidings"  # ``messaging.system`` of tidings' spans

_NOTHING: AbstractContextManager[None] = nullcontext()
_NO_HEADERS: AbstractContextManager[Mapping[str, str]] = nullcontext(MappingProxyType({}))
_cached: tuple[object, Any] = (None, None)


def recording() -> bool:
    """Whether the application configured a ``TracerProvider`` (so spans are recorded)."""
    if not ENABLED:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def tracer() -> trace.Tracer:
    """tidings' tracer from the current global provider (looked up again when it changes)."""
    global _cached
    provider = trace.get_tracer_provider()
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("tidings"))
    return _cached[1]  # type: ignore[no-any-return]


def extract(traceparent: object, tracestate: object = None) -> Context | None:
    """The remote context in a ``traceparent`` (with its ``tracestate``), or None when there
    is none, OpenTelemetry is not installed, or the value is not a valid W3C traceparent."""
    if not ENABLED or not _fits(traceparent):
        return None
    carrier = {TRACEPARENT: traceparent}
    if _fits(tracestate):
        carrier[TRACESTATE] = tracestate
    try:
        context = _PROPAGATOR.extract(carrier)
    except Exception:  # noqa: BLE001 - a trace header never fails the work it came with
        return None
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def handling(delivery: Delivery, event: Event) -> AbstractContextManager[object]:
    """The CONSUMER span ``<subscription> process <event type>`` to run a handler in, child
    of the delivery's ``traceparent`` (a new trace when it has none and spans are recorded).
    A no-op without a ``traceparent`` and without a configured provider. Exceptions leaving
    it are recorded on the span and mark it failed."""
    if not ENABLED:
        return _NOTHING
    headers = delivery.message.headers
    parent = extract(headers.get(TRACEPARENT), headers.get(TRACESTATE))
    if parent is None:
        if not recording():
            return _NOTHING
        parent = Context()
    return tracer().start_as_current_span(
        f"{delivery.subscription} process {event.event_type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.topic,
            "messaging.consumer.group.name": delivery.subscription,
            "messaging.message.id": str(event.id),
            "tidings.event_type": event.event_type,
            "tidings.entity_id": event.entity_id,
            "tidings.correlation_id": event.correlation_id,
            "tidings.attempt": delivery.attempt,
        },
    )


def publishing(topic: str, event: Event) -> AbstractContextManager[Mapping[str, str]]:
    """The PRODUCER span ``<topic> create <event type>`` to write an event in, child of the
    current span; entering it gives the headers that carry its context (``traceparent`` and,
    when there is one, ``tracestate``). Gives no headers when no span is current and no
    provider is configured."""
    if not ENABLED:
        return _NO_HEADERS
    if not trace.get_current_span().get_span_context().is_valid and not recording():
        return _NO_HEADERS
    return _producing(topic, event)


@contextlib.contextmanager
def _producing(topic: str, event: Event) -> Iterator[Mapping[str, str]]:
    with tracer().start_as_current_span(
        f"{topic} create {event.event_type}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "create",
            "messaging.destination.name": topic,
            "messaging.message.id": str(event.id),
            "tidings.event_type": event.event_type,
            "tidings.entity_id": event.entity_id,
            "tidings.correlation_id": event.correlation_id,
        },
    ):
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        yield carrier


def _fits(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_HEADER_CHARS
