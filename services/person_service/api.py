"""The Person API: the source of truth for people. Publishes to the ``person`` topic through
its outbox; a relay in the same process publishes each commit at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Request, Response

from person_service.model import PersonCreate, PersonOut, PersonPatch
from person_service.store import PersonStore
from person_service.tables import metadata
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

PATH = "/api/v1/persons"


def store(request: Request) -> PersonStore:
    return request.app.state.store  # type: ignore[no-any-return]


Store = Annotated[PersonStore, Depends(store)]


def create_app(settings: Settings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    """The Person API, with its relay running beside it for as long as the app runs."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with publishing_domain(settings, "person", metadata) as (engine, outbox):
            app.state.store = PersonStore(engine, outbox)
            yield

    app = FastAPI(title="Person API", version="1.0.0", lifespan=lifespan)
    install(app, auth=auth or AuthSettings.from_env(), name="person-api")

    @app.post(PATH, status_code=201, response_model=PersonOut, response_model_by_alias=True)
    async def create_person(
        body: PersonCreate, response: Response, people: Store, who: Writer, cid: CorrelationId
    ) -> PersonOut:
        person_id = await people.create(body, user=who.user, correlation_id=cid)
        person = await people.get(person_id)
        assert person is not None
        response.headers["Location"] = f"{PATH}/{person_id}"
        response.headers["ETag"] = etag(person.version_number)
        return person

    @app.get(f"{PATH}/{{person_id}}", response_model=PersonOut, response_model_by_alias=True)
    async def get_person(person_id: str, response: Response, people: Store, _: Reader) -> PersonOut:
        person = await people.get(person_id)
        if person is None:
            raise Problem(404, "Person not found", f"no person with id {person_id}")
        response.headers["ETag"] = etag(person.version_number)
        return person

    @app.patch(f"{PATH}/{{person_id}}", status_code=204, response_class=Response)
    async def patch_person(
        person_id: str,
        body: Annotated[PersonPatch, Body()],
        people: Store,
        who: Writer,
        cid: CorrelationId,
        if_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        changes = body.model_dump(exclude_unset=True, by_alias=False)
        for required in ("first_name", "surname", "person_types"):
            if required in changes and changes[required] is None:
                field = PersonPatch.model_fields[required].alias or required
                raise Problem(
                    400,
                    "Invalid request",
                    f"{field} cannot be null",
                    errors=[{"field": field, "message": "cannot be null"}],
                )

        def guard(version: Any) -> None:
            check_if_match(if_match, int(version))

        version = await people.patch(
            person_id, changes, if_match=guard, user=who.user, correlation_id=cid
        )
        if version is None:
            raise Problem(404, "Person not found", f"no person with id {person_id}")
        return Response(status_code=204, headers={"ETag": etag(version)})

    return app
