"""The correlation id: one id follows a request into its logs, its events and its response.

A request may bring its own id in ``x-correlation-id`` (1 to 128 printable ASCII characters,
no spaces, sent once); otherwise a new uuid4 string is made. Every HTTP response, errors
included, carries the id back in ``x-correlation-id``. While the request runs, the id is
:func:`current_correlation_id` and the :func:`correlation_id` dependency.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Annotated

from fastapi import Depends
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.web.problems import Problem, status_phrase

__all__ = [
    "CORRELATION_HEADER",
    "CorrelationId",
    "CorrelationIdMiddleware",
    "correlation_id",
    "current_correlation_id",
    "internal_error",
    "is_valid_correlation_id",
]

CORRELATION_HEADER = "x-correlation-id"

_VALID = re.compile(r"[\x21-\x7e]{1,128}")
_current: ContextVar[str] = ContextVar("tidings_correlation_id")
logger = logging.getLogger("tidings.web")


def is_valid_correlation_id(value: str) -> bool:
    """Whether ``value`` is 1 to 128 printable ASCII characters without spaces."""
    return _VALID.fullmatch(value) is not None


def current_correlation_id() -> str:
    """The correlation id of the request being served.

    Raises :class:`LookupError` outside a request that went through
    :class:`CorrelationIdMiddleware`.
    """
    return _current.get()


async def correlation_id() -> str:
    """FastAPI dependency: the correlation id of this request."""
    return current_correlation_id()


CorrelationId = Annotated[str, Depends(correlation_id)]
"""Parameter annotation giving an endpoint the request's correlation id."""


def internal_error(correlation_id: str | None) -> Problem:
    """The 500 problem for an unexpected exception: a generic message, nothing of the cause."""
    detail = "an unexpected error occurred"
    if correlation_id is not None:
        detail += f"; quote correlation id {correlation_id} when reporting it"
    return Problem(500, status_phrase(500), detail)


class CorrelationIdMiddleware:
    """Pure ASGI middleware that binds, checks and echoes the correlation id, and marks every
    response ``X-Content-Type-Options: nosniff`` (a JSON body is never run as script).

    An invalid ``x-correlation-id`` is answered with a 400 problem naming the header (and a
    fresh id in the response header). An exception escaping the app before the response
    started is logged with the correlation id and answered with a 500 problem; after the
    response started it is re-raised, as nothing can be sent any more. Non-HTTP scopes pass
    through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = [v for k, v in scope["headers"] if k == CORRELATION_HEADER.encode()]
        received = supplied[0].decode("latin-1") if len(supplied) == 1 else None
        valid = not supplied or (received is not None and is_valid_correlation_id(received))
        cid = received if valid and received is not None else str(uuid.uuid4())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[CORRELATION_HEADER] = cid
                headers.setdefault("x-content-type-options", "nosniff")
            await send(message)

        token = _current.set(cid)
        try:
            if not valid:
                problem = _invalid_header()
                await problem.response(cid)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started:
                raise
            logger.exception(
                "unhandled error in %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"correlationId": cid},
            )
            await internal_error(cid).response(cid)(scope, receive, send_with_id)
        finally:
            _current.reset(token)


def _invalid_header() -> Problem:
    message = "must be sent once, as 1 to 128 printable ASCII characters without spaces"
    return Problem(
        400,
        status_phrase(400),
        f"{CORRELATION_HEADER} {message}",
        errors=[{"field": CORRELATION_HEADER, "message": message}],
    )
