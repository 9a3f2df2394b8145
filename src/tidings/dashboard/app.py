"""The dashboard's web app: one static page and the JSON endpoints it polls.

Reads need a valid token (the same JWT as the APIs); pause, resume, redrive and purge need
one of the operator groups. Every response carries a strict Content-Security-Policy: the
page runs only its own script file, and shows what comes from events as text, never HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.brokers import connect
from tidings.config import Settings
from tidings.control import ControlStore
from tidings.dashboard.auth import OPERATOR_GROUP, Operator
from tidings.dashboard.history import History
from tidings.dashboard.views import Operations, dead_letter_json, trace_json
from tidings.errors import BrokerError, ConfigurationError, TidingsError, UnknownSubscription
from tidings.web import ApiModel, AuthSettings, Problem, Reader, current_correlation_id, install
from tidings.web.correlation import internal_error

__all__ = ["CONTENT_SECURITY_POLICY", "create_app"]

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Pure ASGI middleware adding :data:`CONTENT_SECURITY_POLICY` and its companions to
    every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RedriveRequest(ApiModel):
    """``{"ids": [...]}`` redrives those dead letters; no ids (or ``null``) redrives all."""

    ids: list[str] | None = None


def _operations(request: Request) -> Operations:
    operations: Operations = request.app.state.operations
    return operations


async def _known(request: Request, name: str) -> Operations:
    operations = _operations(request)
    if await operations.subscription(name) is None:
        raise Problem(404, "Not Found", f"no subscription {name!r} is declared")
    return operations


async def _tidings_error(request: Request, exc: Exception) -> Response:
    try:
        cid: str | None = current_correlation_id()
    except LookupError:
        cid = None
    if isinstance(exc, UnknownSubscription):
        problem = Problem(404, "Not Found", str(exc))
    elif isinstance(exc, ConfigurationError):
        problem = Problem(400, "Bad Request", str(exc))
    elif isinstance(exc, BrokerError):
        problem = Problem(503, "Service Unavailable", f"the broker did not answer: {exc}")
    else:
        problem = internal_error(cid)
    return problem.response(cid)


def create_app(
    settings: Settings | None = None,
    auth: AuthSettings | None = None,
    *,
    interval: float = 2.0,
    window: float = 600.0,
    operator_groups: Iterable[str] = (OPERATOR_GROUP,),
) -> FastAPI:
    """The dashboard over the deployment ``settings`` names (its broker and control store),
    sampling history every ``interval`` seconds and keeping ``window`` seconds of it."""
    settings = settings or Settings.from_env()
    history = History(interval=interval, window=window)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ControlStore.open(settings.control_database_url) as store:
            broker = await connect(settings.broker_url)
            operations = Operations(broker, store, history)
            app.state.operations = operations
            sampler = asyncio.create_task(operations.sample_forever())
            try:
                yield
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                await broker.close()

    app = FastAPI(
        title="tidings dashboard", version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.operator_groups = frozenset(operator_groups)

    async def health() -> dict[str, Any]:
        return {"subscriptions": len(await _operations_of(app).store.subscriptions())}

    install(app, auth=auth or AuthSettings.from_env(), name="dashboard", health=health)
    app.add_exception_handler(TidingsError, _tidings_error)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/overview", summary="Topics and subscriptions: depth, rate, controls")
    async def overview(request: Request, _: Reader) -> dict[str, Any]:
        return await _operations(request).overview()

    @app.get("/api/history", summary="Throughput and backlog per subscription, sampled")
    async def history_(_: Reader) -> dict[str, Any]:
        return history.as_json()

    @app.get("/api/subscriptions/{name}/dead-letters", summary="Dead letters, oldest first")
    async def dead_letters(
        request: Request,
        name: str,
        _: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        operations = await _known(request, name)
        letters = await operations.broker.dead_letters(name, limit=limit)
        return {"subscription": name, "deadLetters": [dead_letter_json(d) for d in letters]}

    @app.post("/api/subscriptions/{name}/redrive", summary="Send dead letters back")
    async def redrive(
        request: Request, name: str, _: Operator, body: RedriveRequest | None = None
    ) -> dict[str, Any]:
        operations = await _known(request, name)
        ids = body.ids if body is not None else None
        if ids is not None and not ids:
            raise Problem(
                400,
                "Bad Request",
                "ids must name at least one dead letter; leave it out to redrive all",
                [{"field": "ids", "message": "must not be empty"}],
            )
        moved = await operations.broker.redrive(name, ids)
        return {"subscription": name, "redriven": moved}

    @app.delete("/api/subscriptions/{name}/dead-letters", summary="Delete every dead letter")
    async def purge(request: Request, name: str, _: Operator) -> dict[str, Any]:
        operations = await _known(request, name)
        return {"subscription": name, "purged": await operations.broker.purge(name)}

    async def _set_paused(request: Request, name: str, paused: bool) -> dict[str, Any]:
        operations = await _known(request, name)
        controls = await operations.store.set_controls(name, paused=paused)
        return {
            "subscription": name,
            "paused": controls.paused,
            "updatedAt": None if controls.updated_at is None else controls.updated_at.isoformat(),
        }

    @app.post("/api/subscriptions/{name}/pause", summary="Pause every listener of it")
    async def pause(request: Request, name: str, _: Operator) -> dict[str, Any]:
        return await _set_paused(request, name, True)

    @app.post("/api/subscriptions/{name}/resume", summary="Resume every listener of it")
    async def resume(request: Request, name: str, _: Operator) -> dict[str, Any]:
        return await _set_paused(request, name, False)

    @app.get("/api/trace", summary="The latest trace records, newest first")
    async def recent(
        request: Request, _: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> dict[str, Any]:
        records = await _operations(request).store.recent(limit=limit)
        return {"records": [trace_json(r) for r in records]}

    @app.get("/api/trace/{correlation_id}", summary="Every step of one change")
    async def trace(request: Request, correlation_id: str, _: Reader) -> dict[str, Any]:
        records = await _operations(request).store.trace(correlation_id)
        return {"correlationId": correlation_id, "records": [trace_json(r) for r in records]}

    return app


def _operations_of(app: FastAPI) -> Operations:
    operations: Operations = app.state.operations
    return operations
