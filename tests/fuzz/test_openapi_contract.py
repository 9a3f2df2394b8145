"""Schemathesis against the OpenAPI document of every API of the reference deployment (run in
this process, over ASGI, on SQLite under a temporary folder): for generated requests, valid
and invalid alike, no response is a 5xx, and every response matches the document (status,
content type, headers, body), with a valid token and with invalid ones. Bounded: a few dozen
examples per operation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from activity_service.api import create_app as activity_app
from person_service.api import create_app as person_app
from reference_deployment import TOPOLOGY
from tenure_service.api import create_app as tenure_app
from tidings.brokers import connect
from tidings.config import Settings
from tidings.web import AuthSettings, mint_token

pytestmark = pytest.mark.slow

SECRET = "contract-secret-" + "c" * 40
WRITERS = "housing-writers"
BUDGET = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _valid() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, subject='u-1', groups=[WRITERS])}"}


INVALID = [
    {"Authorization": "Bearer " + mint_token("x" * 40, subject="u-1", groups=[WRITERS])},
    {"Authorization": "Bearer not-a-token"},
    {"Authorization": "Token abc"},
    {},
]


async def _declare(broker_url: str) -> None:
    broker = await connect(broker_url)
    try:
        await broker.declare(TOPOLOGY)
    finally:
        await broker.close()


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FastAPI]]:
    home: Path = tmp_path_factory.mktemp("contract")
    settings_ = Settings(home=home, broker_url=f"sqlite:///{home}/broker.db")
    asyncio.run(_declare(settings_.broker_url))
    auth = AuthSettings(secret=SECRET, write_groups=frozenset({WRITERS}))
    yield {
        "person": person_app(settings_, auth),
        "tenure": tenure_app(settings_, auth),
        "activity": activity_app(settings_, auth),
    }
    asgi.shutdown_lifespans()


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


EXCLUDED = [positive_data_acceptance]
"""Schema-valid requests that break a business rule (a date of birth in the future, a person
listed twice, a stale If-Match) are rightly refused with 400/412; every other check runs."""


def _check(case: Any) -> None:
    headers = _valid()
    response = case.call(headers=headers)
    assert response.status_code < 500, response.text
    case.validate_response(response, headers=headers, excluded_checks=EXCLUDED)
    if case.path in ("/health", "/metrics"):
        return
    for invalid in INVALID:
        refused = case.call(headers=invalid)
        assert refused.status_code == 401, (invalid, refused.text)
        case.validate_response(refused, headers=invalid, excluded_checks=EXCLUDED)


@pytest.mark.parametrize("api", ["person", "tenure", "activity"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_its_contract(
    apps: dict[str, FastAPI], api: str, mode: GenerationMode
) -> None:
    operations = _operations(apps[api])
    assert len(operations) >= 3
    tried = 0
    for operation in operations:

        @BUDGET
        @given(case=operation.as_strategy(generation_mode=mode))
        def keeps_contract(case: Any) -> None:
            _check(case)

        try:
            keeps_contract()
            tried += 1
        except Unsatisfiable:
            # nothing in this operation's input can be made invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert tried >= (len(operations) if mode is GenerationMode.POSITIVE else 1)


def test_documents_name_the_problems_each_operation_answers(apps: dict[str, FastAPI]) -> None:
    person_doc = apps["person"].openapi()
    assert person_doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    paths = person_doc["paths"]
    responses = {
        (method.upper(), path): sorted(op["responses"])
        for path, item in paths.items()
        for method, op in item.items()
    }
    assert responses[("POST", "/api/v1/persons")] == ["201", "400", "401", "403", "413"]
    assert responses[("GET", "/api/v1/persons/{person_id}")] == ["200", "400", "401", "404"]
    assert responses[("PATCH", "/api/v1/persons/{person_id}")] == [
        *["204", "400", "401", "403", "404", "412", "413", "428"]
    ]
    assert responses[("GET", "/health")] == ["200"]
    problem = paths["/api/v1/persons"]["post"]["responses"]["401"]["content"]
    assert problem["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    for api in ("tenure", "activity"):
        for item in apps[api].openapi()["paths"].values():
            for op in item.values():
                assert "422" not in op["responses"]
