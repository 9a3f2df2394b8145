"""The request's span: an API request continues the caller's W3C ``traceparent``, so that the
events it writes (and the listeners' work on them) join the caller's trace.

FastAPI's own telemetry (recent FastAPI with a configured ``TracerProvider``) and
``opentelemetry-instrumentation-asgi`` make a SERVER span current before this middleware
runs; then it only tags that span with the correlation id. Otherwise it starts the SERVER
span itself, as :mod:`tidings.tracing` describes (nothing at all without OpenTelemetry).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings import tracing
from tidings.web.correlation import CORRELATION_HEADER

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
except ImportError:  # the optional extra ``otel`` is not installed: tracing.ENABLED is False
    pass

__all__ = ["TraceContextMiddleware"]

_CORRELATION = CORRELATION_HEADER.encode()
_TRACEPARENT = tracing.TRACEPARENT.encode()
_TRACESTATE = tracing.TRACESTATE.encode()


class TraceContextMiddleware:
    """Pure ASGI middleware: runs each HTTP request in a SERVER span named
    ``<method> <route>``, child of the request's ``traceparent`` (sent once; a repeated or
    malformed one is ignored and the request starts a new trace). The span gets the
    response status, the route and the correlation id (``tidings.correlation_id``), and fails
    on a 5xx or an exception. Non-HTTP scopes pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not tracing.ENABLED or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            await self.app(scope, receive, _tagging(current, send))
            return
        parent = _incoming(scope)
        if parent is None:
            if not tracing.recording():
                await self.app(scope, receive, send)
                return
            parent = Context()
        method = str(scope.get("method") or "HTTP")
        attributes = {"http.request.method": method, "url.path": str(scope.get("path", ""))}
        with tracing.tracer().start_as_current_span(
            method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            try:
                await self.app(scope, receive, _tagging(span, send))
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


def _incoming(scope: Scope) -> Context | None:
    parents = [value for name, value in scope["headers"] if name == _TRACEPARENT]
    if len(parents) != 1:
        return None
    states = [value.decode("latin-1") for name, value in scope["headers"] if name == _TRACESTATE]
    return tracing.extract(parents[0].decode("latin-1"), ",".join(states) or None)


def _tagging(span: trace.Span, send: Send) -> Send:
    """``send``, tagging ``span`` with the response's status and correlation id."""

    async def send_tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            for name, value in message.get("headers", ()):
                if name.lower() == _CORRELATION:
                    span.set_attribute("tidings.correlation_id", value.decode("latin-1"))
        await send(message)

    return send_tagged
