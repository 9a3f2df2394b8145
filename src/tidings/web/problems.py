"""Errors as ``application/problem+json`` (RFC 9457).

Every error body has ``type``, ``title``, ``status`` and ``detail``; ``errors`` lists the
failing fields (``[{"field": "tenuredAsset.uprn", "message": "..."}]``) when there are any,
and ``correlationId`` is the request's correlation id when one is known. ``type`` is
``about:blank`` unless the raiser gives a URI of its own, so ``title`` is the HTTP status
phrase for the errors tidings produces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, TypedDict

from starlette.responses import JSONResponse

__all__ = ["PROBLEM_JSON", "FieldError", "Problem", "ProblemResponse", "status_phrase"]

PROBLEM_JSON = "application/problem+json"
"""The media type of every error response."""


class FieldError(TypedDict):
    """One failing input: ``field`` is the camelCase path of a body field (``a.0.b``), or the
    name of a query parameter, header or path parameter as the client sends it."""

    field: str
    message: str


class ProblemResponse(JSONResponse):
    """A JSON response served as ``application/problem+json``."""

    media_type = PROBLEM_JSON


def status_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (``"Precondition Failed"``), or ``"Error"``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An error a service raises to answer with a problem document.

    ``headers`` are sent with the response (``WWW-Authenticate``, ``ETag``...). ``detail``
    defaults to ``title``, so that every body carries a human-readable ``detail``.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        type: str = "about:blank",
    ) -> None:
        super().__init__(f"{status} {title}: {detail or title}")
        self.status = status
        self.title = title
        self.detail = detail if detail is not None else title
        self.errors: list[FieldError] = list(errors or [])
        self.headers: dict[str, str] = dict(headers or {})
        self.type = type

    def body(self, correlation_id: str | None = None) -> dict[str, Any]:
        """The problem document; ``errors`` and ``correlationId`` only when there are any."""
        document: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            document["errors"] = [dict(e) for e in self.errors]
        if correlation_id is not None:
            document["correlationId"] = correlation_id
        return document

    def response(self, correlation_id: str | None = None) -> ProblemResponse:
        """This problem as a response, with its status and headers."""
        return ProblemResponse(
            self.body(correlation_id), status_code=self.status, headers=self.headers
        )
