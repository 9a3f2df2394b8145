"""Exception handlers that turn every error into a problem document.

- :class:`~tidings.web.problems.Problem`: its own status, headers, detail and errors.
- ``RequestValidationError``: **400** (not FastAPI's 422, as the council APIs answer), with
  one ``errors`` entry per failing input. Body fields are named by their camelCase path
  (``householdMembers.0.dateOfBirth``); a body that is not JSON, or is missing, is ``body``;
  query, header and path parameters by the name the client sends.
- ``HTTPException`` (Starlette's and FastAPI's): status and headers kept, the standard title,
  its ``detail`` when it is a string.
- :class:`~tidings.errors.EventTooLarge` (the outbox refused the event a change would
  publish, and the change rolled back with it): **413**, naming the size and the limit.
- Anything else: 500 with a generic detail; logged with the correlation id. Most such errors
  are answered by :class:`~tidings.web.correlation.CorrelationIdMiddleware`; the handler here
  covers exceptions raised in middleware added outside it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from tidings.errors import EventTooLarge
from tidings.web.correlation import current_correlation_id, internal_error
from tidings.web.problems import FieldError, Problem, status_phrase

__all__ = ["field_errors", "install_exception_handlers"]

logger = logging.getLogger("tidings.web")
_PARAMETERS = {"query", "header", "path", "cookie"}


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """Pydantic/FastAPI error dicts as ``{"field", "message"}`` pairs, duplicates removed."""
    result: list[FieldError] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            entry: FieldError = {"field": "body", "message": "the body is not valid JSON"}
        else:
            entry = {"field": _field(loc), "message": str(error.get("msg", "is not valid"))}
        if entry not in result:
            result.append(entry)
    return result


def _field(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] in _PARAMETERS:
        return ".".join(str(part) for part in loc[1:]) or str(loc[0])
    path = loc[1:] if loc and loc[0] == "body" else loc
    parts = [to_camel(p) if isinstance(p, str) and "_" in p else str(p) for p in path]
    return ".".join(parts) or "body"


def _correlation_id() -> str | None:
    try:
        return current_correlation_id()
    except LookupError:
        return None


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(_correlation_id())


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    fields = ", ".join(e["field"] for e in errors)
    problem = Problem(400, status_phrase(400), f"the request is not valid: {fields}", errors)
    return problem.response(_correlation_id())


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status < 200 or status in (204, 304):
        return Response(status_code=status, headers=exc.headers)
    title = status_phrase(status)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
    return Problem(status, title, detail, headers=exc.headers).response(_correlation_id())


async def _too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EventTooLarge)
    detail = (
        f"the event this change would publish is {exc.size} bytes, above the limit of "
        f"{exc.limit} bytes; nothing was changed"
    )
    errors: list[FieldError] = [{"field": "body", "message": "too large to publish"}]
    return Problem(413, status_phrase(413), detail, errors).response(_correlation_id())


async def _unexpected(request: Request, exc: Exception) -> Response:
    cid = _correlation_id()
    logger.error(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"correlationId": cid},
    )
    return internal_error(cid).response(cid)


def install_exception_handlers(app: FastAPI) -> None:
    """Register the problem handlers on ``app``, replacing FastAPI's defaults."""
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(EventTooLarge, _too_large)
    app.add_exception_handler(Exception, _unexpected)
