"""The OpenAPI document says what the API really answers: the bearer scheme, and the
``application/problem+json`` errors that :mod:`tidings.web` produces.

FastAPI documents a 422 validation error that tidings never sends (it answers 400), and none
of the errors raised by the auth, ETag and outbox layers. :func:`document_problems` fixes
the document once, when it is first generated, from what each route depends on:

- every operation but ``/health`` and ``/metrics``: 400 (invalid input or
  ``x-correlation-id``); with path parameters, 404;
- operations that need a token (:func:`~tidings.web.auth.authenticated`): 401 and the
  ``bearerAuth`` scheme, and 403 when another dependency may refuse a valid token (a write
  group, an operator group);
- writes (:func:`~tidings.web.auth.writer`): 403 and 413 (the event the change would
  publish is over the size limit), and on PATCH, PUT and DELETE 412 and 428 (``If-Match``
  does not match, or is missing where the service requires it).

Responses an operation documents itself are kept as they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from tidings.web.auth import authenticated, depends_on, writer
from tidings.web.problems import PROBLEM_JSON, status_phrase

__all__ = ["PROBLEM_SCHEMA", "document_problems"]

UNAUTHENTICATED = frozenset({"/health", "/metrics"})

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "correlationId": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
"""JSON Schema of an ``application/problem+json`` body (see :mod:`tidings.web.problems`)."""

_REF = {"$ref": "#/components/schemas/Problem"}
_CONDITIONAL = {"put", "patch", "delete"}


def document_problems(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with the problem responses added."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_problems(generate(), app)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _problem(status: int) -> dict[str, Any]:
    return {"description": status_phrase(status), "content": {PROBLEM_JSON: {"schema": _REF}}}


def _needs(app: FastAPI) -> dict[tuple[str, str], tuple[bool, bool, bool]]:
    """(path, method) -> (needs a token, may refuse a valid token, is a write)."""
    needs = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            token = depends_on(route.dependant, authenticated)
            write = depends_on(route.dependant, writer)
            # a dependency built on authenticated (writer, an operator check) may refuse
            groups = any(depends_on(d, authenticated) for d in route.dependant.dependencies)
            for method in route.methods or ():
                needs[(route.path_format, method.lower())] = (token, groups, write)
    return needs


def _add_problems(document: dict[str, Any], app: FastAPI) -> None:
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    needs = _needs(app)
    for path, item in document.get("paths", {}).items():
        if path in UNAUTHENTICATED:
            continue
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            token, groups, write = needs.get((path, method), (False, False, False))
            statuses = [400]
            if "{" in path:
                statuses.append(404)
            if token:
                statuses.append(401)
                operation.setdefault("security", [{"bearerAuth": []}])
            if groups:
                statuses.append(403)
            if write:
                statuses.append(413)
                if method in _CONDITIONAL:
                    statuses += [412, 428]
            responses: dict[str, Any] = operation["responses"]
            if responses.get("422", {}).get("description") == "Validation Error":
                del responses["422"]
            for status in statuses:
                responses.setdefault(str(status), _problem(status))
    if "HTTPValidationError" not in str(document.get("paths", {})):
        components["schemas"].pop("HTTPValidationError", None)
        components["schemas"].pop("ValidationError", None)
