"""Correlation ids, problem documents, If-Match, pagination and /health over HTTP."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException
from pydantic import Field

from tidings.errors import ConfigurationError
from tidings.web import (
    ApiModel,
    AuthSettings,
    CorrelationId,
    Cursor,
    Page,
    PageSize,
    PaginationDetails,
    Problem,
    Writer,
    check_if_match,
    current_correlation_id,
    encode_cursor,
    etag,
    install,
    mint_token,
)

SECRET = "s" * 32
SETTINGS = AuthSettings(secret=SECRET, write_groups=frozenset({"tenure-writers"}))
AUTH = {"Authorization": "Bearer " + mint_token(SECRET, subject="u-1", groups=["tenure-writers"])}
Health = Callable[[], Awaitable[dict[str, Any]]]


class Asset(ApiModel):
    uprn: str = Field(pattern=r"^\d{12}$")


class Member(ApiModel):
    full_name: str
    date_of_birth: date


class NewTenure(ApiModel):
    tenured_asset: Asset
    household_members: list[Member]


class TenureSummary(ApiModel):
    id: str
    payment_reference: str


def demo_app(health: Health | None = None) -> FastAPI:
    app = FastAPI()
    install(app, auth=SETTINGS, name="tenure-api", health=health)

    @app.post("/tenures", status_code=201)
    async def create(body: NewTenure, principal: Writer, cid: CorrelationId) -> dict[str, Any]:
        return {"members": len(body.household_members), "correlationId": cid}

    @app.patch("/tenures/{tenure_id}", status_code=204)
    async def update(
        tenure_id: str, if_match: Annotated[str | None, Header(alias="If-Match")] = None
    ) -> None:
        check_if_match(if_match, current_version=3)

    @app.get("/tenures")
    async def search(size: PageSize, cursor: Cursor) -> Page[TenureSummary]:
        start = 0 if cursor is None else int(cursor["after"])
        results = [TenureSummary(id=str(i), payment_reference=f"P{i}") for i in range(start, 45)]
        more = start + size < 45
        next_token = encode_cursor({"after": start + size}) if more else None
        return Page(
            results=results[:size], pagination_details=PaginationDetails(next_token=next_token)
        )

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str]:
        return {"correlationId": current_correlation_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2")

    @app.get("/gone")
    async def gone() -> None:
        raise HTTPException(410, "tenure was archived", headers={"X-Archived": "yes"})

    @app.get("/conflict")
    async def conflict() -> None:
        raise Problem(409, "Conflict", "the member is already in the household")

    return app


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []

    def make(health: Health | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=demo_app(health))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
        return opened[-1]

    yield make
    for c in opened:
        await c.aclose()


def member(**fields: Any) -> dict[str, Any]:
    return {"fullName": "Ann Lee", "dateOfBirth": "1980-02-03", **fields}


def tenure(**fields: Any) -> dict[str, Any]:
    return {"tenuredAsset": {"uprn": "100023336956"}, "householdMembers": [member()], **fields}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["correlationId"] == response.headers["x-correlation-id"]
    return body


async def test_supplied_correlation_id_is_echoed_and_bound(client: Callable[..., Any]) -> None:
    headers = {**AUTH, "x-correlation-id": "req-42"}
    response = await client().post("/tenures", json=tenure(), headers=headers)
    assert response.status_code == 201
    assert response.headers["x-correlation-id"] == "req-42"
    assert response.json()["correlationId"] == "req-42"


async def test_missing_correlation_id_is_generated_and_reaches_sync_code(
    client: Callable[..., Any],
) -> None:
    response = await client().get("/sync")
    generated = response.headers["x-correlation-id"]
    assert uuid.UUID(generated).version == 4
    assert response.json() == {"correlationId": generated}


async def test_correlation_id_is_echoed_on_errors(client: Callable[..., Any]) -> None:
    response = await client().post("/tenures", json=tenure(), headers={"x-correlation-id": "c-1"})
    assert problem(response, 401)["correlationId"] == "c-1"


@pytest.mark.parametrize("value", ["has space", "x" * 129, "tab\there", "caf\u00e9".encode()])
async def test_invalid_correlation_id_is_400_naming_the_header(
    client: Callable[..., Any], value: str | bytes
) -> None:
    response = await client().get("/sync", headers={"x-correlation-id": value})
    body = problem(response, 400)
    assert body["errors"][0]["field"] == "x-correlation-id"
    assert response.headers["x-correlation-id"] != value


async def test_correlation_id_sent_twice_is_400(client: Callable[..., Any]) -> None:
    headers = [("x-correlation-id", "a"), ("x-correlation-id", "b")]
    response = await client().get("/sync", headers=headers)
    assert problem(response, 400)["errors"][0]["field"] == "x-correlation-id"


def test_current_correlation_id_outside_a_request_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        current_correlation_id()


async def test_validation_errors_name_camel_case_field_paths(client: Callable[..., Any]) -> None:
    body = tenure(tenuredAsset={"uprn": "12"}, householdMembers=[member(), member(dateOfBirth="x")])
    del body["householdMembers"][0]["fullName"]
    response = await client().post("/tenures", json=body, headers=AUTH)
    fields = {e["field"] for e in problem(response, 400)["errors"]}
    assert fields == {
        "tenuredAsset.uprn",
        "householdMembers.0.fullName",
        "householdMembers.1.dateOfBirth",
    }


async def test_snake_case_input_is_accepted_and_errors_still_camel_case(
    client: Callable[..., Any],
) -> None:
    ok = {"tenured_asset": {"uprn": "100023336956"}, "household_members": []}
    assert (await client().post("/tenures", json=ok, headers=AUTH)).status_code == 201
    bad = {"tenured_asset": {"uprn": "1"}, "household_members": []}
    response = await client().post("/tenures", json=bad, headers=AUTH)
    assert [e["field"] for e in problem(response, 400)["errors"]] == ["tenuredAsset.uprn"]


async def test_query_parameter_errors_use_the_parameter_name(client: Callable[..., Any]) -> None:
    response = await client().get("/tenures", params={"pageSize": "many"})
    assert [e["field"] for e in problem(response, 400)["errors"]] == ["pageSize"]


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]"])
async def test_malformed_or_missing_body_is_400_naming_body(
    client: Callable[..., Any], content: bytes
) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    response = await client().post("/tenures", content=content, headers=headers)
    assert [e["field"] for e in problem(response, 400)["errors"]] == ["body"]


async def test_unexpected_error_is_500_without_details_and_logged_with_correlation_id(
    client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tidings.web"):
        response = await client().get("/boom", headers={"x-correlation-id": "c-500"})
    body = problem(response, 500)
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "c-500" in body["detail"]
    assert response.headers["x-correlation-id"] == "c-500"
    [record] = [r for r in caplog.records if r.name == "tidings.web"]
    assert record.__dict__["correlationId"] == "c-500" and record.exc_info is not None


async def test_http_exceptions_keep_status_detail_and_headers(client: Callable[..., Any]) -> None:
    gone = await client().get("/gone")
    assert problem(gone, 410)["detail"] == "tenure was archived"
    assert gone.headers["x-archived"] == "yes"
    missing = problem(await client().get("/nowhere"), 404)
    assert missing["title"] == "Not Found"
    not_allowed = await client().delete("/tenures")
    problem(not_allowed, 405)
    assert not_allowed.headers["allow"]


async def test_problem_raised_by_a_service_is_served_as_is(client: Callable[..., Any]) -> None:
    body = problem(await client().get("/conflict"), 409)
    assert body["title"] == "Conflict"
    assert body["detail"] == "the member is already in the household"


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ('"3"', 204),
        ("3", 204),
        ('W/"3"', 204),
        ("*", 204),
        ('"1", "3"', 204),
        (None, 204),
        ('"2"', 412),
        ('"03"', 412),
        ('"2", W/"4"', 412),
        ('"3', 400),
        ("3 4", 400),
        ('*, "3"', 400),
        (" , ", 400),
    ],
)
async def test_if_match(client: Callable[..., Any], if_match: str | None, status: int) -> None:
    headers = {} if if_match is None else {"If-Match": if_match}
    response = await client().patch("/tenures/t-1", headers=headers)
    assert response.status_code == status, response.text
    if status == 412:
        assert response.headers["etag"] == etag(3) == '"3"'
    if status == 400:
        assert problem(response, 400)["errors"][0]["field"] == "If-Match"


def test_if_match_can_be_required() -> None:
    with pytest.raises(Problem) as raised:
        check_if_match(None, 3, required=True)
    assert raised.value.status == 428


async def test_pages_follow_next_tokens_to_the_end(client: Callable[..., Any]) -> None:
    http, seen, token = client(), [], None
    while True:
        params = {"pageSize": 20} | ({"paginationToken": token} if token else {})
        body = (await http.get("/tenures", params=params)).json()
        assert set(body) == {"results", "paginationDetails"}
        seen += [r["id"] for r in body["results"]]
        assert all("paymentReference" in r for r in body["results"])
        token = body["paginationDetails"]["nextToken"]
        if token is None:
            break
    assert seen == [str(i) for i in range(45)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"paginationToken": "%%%"}, "paginationToken"),
        ({"paginationToken": "bm90IGpzb24"}, "paginationToken"),
        ({"paginationToken": encode_cursor({"a": 1})[:-2] + "!!"}, "paginationToken"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 101}, "pageSize"),
    ],
)
async def test_bad_pagination_input_is_400(
    client: Callable[..., Any], params: dict[str, Any], field: str
) -> None:
    response = await client().get("/tenures", params=params)
    assert problem(response, 400)["errors"][0]["field"] == field


async def test_health_reports_ok_with_extras_and_needs_no_token(
    client: Callable[..., Any],
) -> None:
    async def check() -> dict[str, Any]:
        return {"database": "ok", "status": "ignored"}

    response = await client(check).get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "tenure-api", "database": "ok"}
    assert "x-correlation-id" in response.headers


async def test_health_is_503_when_the_check_fails(client: Callable[..., Any]) -> None:
    async def check() -> dict[str, Any]:
        raise ConnectionError("database down")

    response = await client(check).get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "service": "tenure-api"}


async def test_health_is_503_when_the_check_hangs() -> None:
    async def check() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    app = FastAPI()
    install(app, auth=SETTINGS, name="tenure-api", health=check, health_timeout=0.05)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/health")).status_code == 503


def test_install_twice_is_refused() -> None:
    app = FastAPI()
    install(app, auth=SETTINGS, name="tenure-api")
    with pytest.raises(ConfigurationError):
        install(app, auth=SETTINGS, name="tenure-api")


async def test_error_in_middleware_added_after_install_is_still_a_problem() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("password=hunter2")

    app = FastAPI()
    install(app, auth=SETTINGS, name="tenure-api")
    app.add_middleware(lambda inner: failing)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/health")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in response.text
