"""The Alerts API: ``POST /webhooks/tidings`` takes events pushed by the dispatcher
(signature verified, each event recorded once however often it comes) and
``GET /api/v1/alerts`` lists the alerts, newest first (same bearer tokens as every API)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Query, Request, Response
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from alerts_service.alerts import SECRET_ENV, WEBHOOK_PATH, alerts_for
from alerts_service.tables import alerts, metadata
from tidings.config import Settings
from tidings.db import create_engine, create_tables, session_factory
from tidings.errors import ConfigurationError, EventError
from tidings.events import Event
from tidings.events.codecs import CloudEventsCodec, decode
from tidings.push import SignatureError, secret_key, verify
from tidings.web import ApiModel, AuthSettings, Problem, Reader, install

BODY_LIMIT = 1_000_000
"""Largest webhook body taken, in bytes."""


class AlertOut(ApiModel):
    id: int
    kind: str
    tenure_id: str
    person_id: str | None
    message: str
    event_id: str
    event_type: str
    correlation_id: str
    occurred_at: datetime
    received_at: datetime


class AlertList(ApiModel):
    results: list[AlertOut]


def sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(sessions)]


def create_app(
    settings: Settings | None = None,
    auth: AuthSettings | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """The app; the webhook secret is read from :data:`SECRET_ENV` now (ConfigurationError
    when missing or malformed)."""
    settings = settings or Settings.from_env()
    environ = os.environ if environ is None else environ
    secret = environ.get(SECRET_ENV)
    if not secret:
        raise ConfigurationError(f"alerts: {SECRET_ENV} is not set")
    key = secret_key(secret)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.domain_database_url("alerts"))
        await create_tables(engine, metadata)
        app.state.sessions = session_factory(engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="Alerts API", version="1.0.0", lifespan=lifespan)
    install(app, auth=auth or AuthSettings.from_env(), name="alerts-api")

    @app.post(WEBHOOK_PATH, status_code=204, include_in_schema=False)
    async def receive(request: Request, db: Sessions) -> Response:
        body = await _body(request)
        try:
            verify(key, body, request.headers)
        except SignatureError as exc:
            raise Problem(401, "Unauthorized", str(exc)) from None
        try:
            event = _event(body, request.headers)
        except EventError as exc:
            raise Problem(422, "Unprocessable event", str(exc)) from None
        await _record(db, event)
        return Response(status_code=204)

    @app.get("/api/v1/alerts", response_model=AlertList, response_model_by_alias=True)
    async def list_alerts(
        db: Sessions,
        _: Reader,
        tenure_id: Annotated[str | None, Query(alias="tenureId", max_length=200)] = None,
        person_id: Annotated[str | None, Query(alias="personId", max_length=200)] = None,
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=500)] = 100,
    ) -> AlertList:
        query = select(alerts)
        if tenure_id is not None:
            query = query.where(alerts.c.tenure_id == tenure_id)
        if person_id is not None:
            query = query.where(alerts.c.person_id == person_id)
        query = query.order_by(alerts.c.seq.desc()).limit(page_size)
        async with db() as session:
            rows = (await session.execute(query)).mappings().all()
        return AlertList(results=[_out(dict(r)) for r in rows])

    return app


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_LIMIT:
            raise Problem(413, "Content Too Large", f"bodies up to {BODY_LIMIT} bytes")
    return bytes(body)


def _event(body: bytes, headers: Mapping[str, str]) -> Event:
    """The event in either CloudEvents HTTP mode (``ce-*`` headers mean binary)."""
    if "ce-id" not in headers:
        return decode(body)
    wire: dict[str, Any] = {
        name[3:]: unquote(value) for name, value in headers.items() if name.startswith("ce-")
    }
    try:
        wire["data"] = json.loads(body) if body else None
    except ValueError:
        raise EventError("binary mode: the body is not JSON") from None
    wire["datacontenttype"] = headers.get("content-type", "application/json")
    return CloudEventsCodec().from_dict(wire)


async def _record(db: async_sessionmaker[AsyncSession], event: Event) -> None:
    """The event's alerts, once: a repeat (same event id) changes nothing."""
    now = datetime.now(UTC)
    rows = [
        {
            "event_id": str(event.id),
            "position": i,
            "kind": alert.kind,
            "event_type": event.event_type,
            "tenure_id": alert.tenure_id,
            "person_id": alert.person_id,
            "message": alert.message[:1000],
            "correlation_id": event.correlation_id,
            "occurred_at": event.date_time,
            "received_at": now,
        }
        for i, alert in enumerate(alerts_for(event))
    ]
    if not rows:
        return
    async with db() as session:
        seen = await session.scalar(
            select(alerts.c.seq).where(alerts.c.event_id == str(event.id)).limit(1)
        )
        if seen is not None:
            return
        try:
            await session.execute(insert(alerts), rows)
            await session.commit()
        except IntegrityError:
            await session.rollback()  # the same event, recorded by a concurrent request


def _out(row: dict[str, Any]) -> AlertOut:
    return AlertOut(
        id=row["seq"],
        kind=row["kind"],
        tenure_id=row["tenure_id"],
        person_id=row["person_id"],
        message=row["message"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        correlation_id=row["correlation_id"],
        occurred_at=row["occurred_at"],
        received_at=row["received_at"],
    )
