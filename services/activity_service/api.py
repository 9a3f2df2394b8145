"""The Activity API: reads the activity history of one target, newest first, a page at a
time (cursor pagination)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activity_service.tables import activities, metadata
from tidings.config import Settings
from tidings.db import create_engine, create_tables, session_factory
from tidings.web import (
    ApiModel,
    AuthSettings,
    PaginationDetails,
    Problem,
    Reader,
    decode_cursor,
    encode_cursor,
    install,
)


class Author(ApiModel):
    full_name: str | None
    email: str | None


class Activity(ApiModel):
    id: str
    type: str
    target_type: str
    target_id: str
    created_at: datetime
    old_data: dict[str, Any] | None
    new_data: dict[str, Any] | None
    author_details: Author
    event_type: str
    source_event_id: str
    correlation_id: str


class ActivityPage(ApiModel):
    results: list[Activity]
    pagination_details: PaginationDetails


KINDS = (
    ("Created", "create"),
    ("Added", "create"),
    ("Updated", "update"),
    ("Removed", "delete"),
    ("Deleted", "delete"),
)


def kind(event_type: str) -> str:
    """create, update or delete, from the event type's verb."""
    return next((k for verb, k in KINDS if verb in event_type), "update")


def sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(sessions)]


def create_app(settings: Settings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.domain_database_url("activity"))
        await create_tables(engine, metadata)
        app.state.sessions = session_factory(engine, read_only=True)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="Activity API", version="1.0.0", lifespan=lifespan)
    install(app, auth=auth or AuthSettings.from_env(), name="activity-api")

    @app.get("/api/v1/activityhistory", response_model=ActivityPage, response_model_by_alias=True)
    async def history(
        db: Sessions,
        _: Reader,
        target_id: Annotated[str, Query(alias="targetId", min_length=1, max_length=200)],
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 20,
        pagination_token: Annotated[str | None, Query(alias="paginationToken")] = None,
    ) -> ActivityPage:
        query = select(activities).where(activities.c.target_id == target_id)
        if pagination_token:
            before = decode_cursor(pagination_token).get("before")
            if not isinstance(before, int):
                raise Problem(
                    400,
                    "Invalid request",
                    "paginationToken is not a token we gave",
                    errors=[{"field": "paginationToken", "message": "invalid"}],
                )
            query = query.where(activities.c.seq < before)
        query = query.order_by(activities.c.seq.desc()).limit(page_size + 1)
        async with db() as session:
            rows = (await session.execute(query)).mappings().all()
        page = rows[:page_size]
        next_token = encode_cursor({"before": page[-1]["seq"]}) if len(rows) > page_size else None
        return ActivityPage(
            results=[_activity(dict(r)) for r in page],
            pagination_details=PaginationDetails(next_token=next_token),
        )

    return app


def _activity(row: dict[str, Any]) -> Activity:
    return Activity(
        id=row["id"],
        type=kind(row["event_type"]),
        target_type=row["target_type"],
        target_id=row["target_id"],
        created_at=row["created_at"],
        old_data=row["old_data"],
        new_data=row["new_data"],
        author_details=Author(full_name=row["author_name"], email=row["author_email"]),
        event_type=row["event_type"],
        source_event_id=row["source_event_id"],
        correlation_id=row["correlation_id"],
    )
