"""The Tenure API: the source of truth for tenures and their households. Publishes to the
``tenure`` topic through its outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from pydantic import BaseModel

from tenure_service.model import MemberFields, TenureCreate, TenureOut, TenurePatch
from tenure_service.store import NotFound, TenureStore
from tenure_service.tables import metadata
from tidings.config import Settings
from tidings.runner import publishing_domain
from tidings.web import (
    AuthSettings,
    CorrelationId,
    Problem,
    Reader,
    Writer,
    check_if_match,
    etag,
    install,
)

PATH = "/api/v1/tenures"


def store(request: Request) -> TenureStore:
    return request.app.state.store  # type: ignore[no-any-return]


Store = Annotated[TenureStore, Depends(store)]
IfMatch = Annotated[str | None, Header()]


def create_app(settings: Settings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    """The Tenure API, with its relay running beside it for as long as the app runs."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with publishing_domain(settings, "tenure", metadata) as (engine, outbox):
            app.state.store = TenureStore(engine, outbox)
            yield

    app = FastAPI(title="Tenure API", version="1.0.0", lifespan=lifespan)
    install(app, auth=auth or AuthSettings.from_env(), name="tenure-api")

    async def write(
        change: Callable[[Callable[[int], None]], Awaitable[int]], if_match: str | None
    ) -> Response:
        def guard(version: int) -> None:
            check_if_match(if_match, version)

        try:
            version = await change(guard)
        except NotFound as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except ValueError as exc:
            raise Problem(400, "Invalid request", str(exc)) from None
        return Response(status_code=204, headers={"ETag": etag(version)})

    @app.post(PATH, status_code=201, response_model=TenureOut, response_model_by_alias=True)
    async def create_tenure(
        body: TenureCreate, response: Response, tenures: Store, who: Writer, cid: CorrelationId
    ) -> TenureOut:
        tenure_id = await tenures.create(body, user=who.user, correlation_id=cid)
        tenure = await tenures.get(tenure_id)
        assert tenure is not None
        response.headers["Location"] = f"{PATH}/{tenure_id}"
        response.headers["ETag"] = etag(tenure.version_number)
        return tenure

    @app.get(f"{PATH}/{{tenure_id}}", response_model=TenureOut, response_model_by_alias=True)
    async def get_tenure(
        tenure_id: str, response: Response, tenures: Store, _: Reader
    ) -> TenureOut:
        tenure = await tenures.get(tenure_id)
        if tenure is None:
            raise Problem(404, "Tenure not found", f"no tenure with id {tenure_id}")
        response.headers["ETag"] = etag(tenure.version_number)
        return tenure

    @app.patch(f"{PATH}/{{tenure_id}}", status_code=204, response_class=Response)
    async def patch_tenure(
        tenure_id: str,
        body: TenurePatch,
        tenures: Store,
        who: Writer,
        cid: CorrelationId,
        if_match: IfMatch = None,
    ) -> Response:
        changes = {name: _plain(getattr(body, name)) for name in body.model_fields_set}
        return await write(
            lambda guard: tenures.patch(
                tenure_id, changes, if_match=guard, user=who.user, correlation_id=cid
            ),
            if_match,
        )

    @app.patch(
        f"{PATH}/{{tenure_id}}/person/{{person_id}}", status_code=204, response_class=Response
    )
    async def upsert_member(
        tenure_id: str,
        person_id: str,
        body: MemberFields,
        tenures: Store,
        who: Writer,
        cid: CorrelationId,
        if_match: IfMatch = None,
    ) -> Response:
        return await write(
            lambda guard: tenures.upsert_member(
                tenure_id, person_id, body, if_match=guard, user=who.user, correlation_id=cid
            ),
            if_match,
        )

    @app.delete(
        f"{PATH}/{{tenure_id}}/person/{{person_id}}", status_code=204, response_class=Response
    )
    async def remove_member(
        tenure_id: str,
        person_id: str,
        tenures: Store,
        who: Writer,
        cid: CorrelationId,
        if_match: IfMatch = None,
    ) -> Response:
        return await write(
            lambda guard: tenures.remove_member(
                tenure_id, person_id, if_match=guard, user=who.user, correlation_id=cid
            ),
            if_match,
        )

    return app


def _plain(value: Any) -> Any:
    return value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value
