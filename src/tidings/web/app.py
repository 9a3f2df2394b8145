"""One call that makes a FastAPI app a tidings domain API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from tidings.errors import ConfigurationError
from tidings.web.auth import AuthenticatedFirst
from tidings.web.correlation import CorrelationIdMiddleware, current_correlation_id
from tidings.web.handlers import install_exception_handlers
from tidings.web.openapi import document_problems
from tidings.web.settings import AuthSettings
from tidings.web.tracing import TraceContextMiddleware

__all__ = ["HealthCheck", "install"]

logger = logging.getLogger("tidings.web")

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]
"""Returns extra facts for ``/health``; raising (or timing out) makes the service unavailable."""


def install(
    app: FastAPI,
    *,
    auth: AuthSettings,
    name: str,
    health: HealthCheck | None = None,
    health_timeout: float = 5.0,
) -> None:
    """Give ``app`` what every tidings API shares; call once, before the app starts.

    - ``app.state.tidings_auth`` = ``auth``, read by the auth dependencies, and
      :class:`~tidings.web.auth.AuthenticatedFirst` as the class of routes added after this
      call (the caller is checked before the request is read);
      ``app.state.tidings_service`` = ``name``;
    - :class:`~tidings.web.correlation.CorrelationIdMiddleware` and the problem handlers, and
      the OpenAPI document naming the problems each operation may answer
      (:func:`~tidings.web.openapi.document_problems`);
    - :class:`~tidings.web.tracing.TraceContextMiddleware` (outermost): the request's span,
      continuing the caller's ``traceparent`` when OpenTelemetry is installed;
    - ``GET /health`` without auth: 200 ``{"status": "ok", "service": name, **extra}`` where
      ``extra`` is what ``health`` returns (its ``status`` and ``service`` keys are ignored),
      or 503 ``{"status": "unavailable", "service": name}`` (plain JSON, so probes read one
      format) when ``health`` raises or takes longer than ``health_timeout`` seconds;
    - ``GET /metrics`` without auth: the process's Prometheus metrics (:mod:`tidings.metrics`).

    Raises :class:`~tidings.errors.ConfigurationError` when called twice on one app.
    """
    if getattr(app.state, "tidings_auth", None) is not None:
        raise ConfigurationError(f"tidings.web is already installed on {name!r}")
    app.state.tidings_auth = auth
    app.state.tidings_service = name
    install_exception_handlers(app)
    document_problems(app)
    app.router.route_class = AuthenticatedFirst
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(TraceContextMiddleware)

    async def health_endpoint() -> JSONResponse:
        extra: dict[str, Any] = {}
        if health is not None:
            try:
                extra = await asyncio.wait_for(health(), health_timeout)
                if not isinstance(extra, dict):
                    raise TypeError(f"the health check returned {type(extra).__name__}")
            except Exception:
                logger.exception(
                    "health check failed",
                    extra={"correlationId": current_correlation_id(), "service": name},
                )
                return JSONResponse({"status": "unavailable", "service": name}, status_code=503)
        body = {"status": "ok", "service": name}
        body.update({k: v for k, v in extra.items() if k not in body})
        return JSONResponse(body)

    app.add_api_route(
        "/health",
        health_endpoint,
        methods=["GET"],
        response_class=JSONResponse,
        summary="Liveness and readiness, without authentication",
        tags=["health"],
    )

    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        response_class=Response,
        summary="Prometheus metrics, without authentication",
        tags=["health"],
    )
