"""Cursor pagination as the council APIs spell it: ``?pageSize=`` and ``?paginationToken=`` in,
``{"results": [...], "paginationDetails": {"nextToken": ...}}`` out.

A cursor is url-safe base64 (no padding) of compact JSON. It is opaque to clients but not
signed: a service must treat a decoded cursor as untrusted input and check its values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import Field

from tidings.web.models import ApiModel
from tidings.web.problems import Problem, status_phrase

__all__ = [
    "MAX_CURSOR_CHARS",
    "Cursor",
    "Page",
    "PageSize",
    "PaginationDetails",
    "decode_cursor",
    "encode_cursor",
    "page_size",
    "page_size_query",
    "pagination_cursor",
]

MAX_CURSOR_CHARS = 2048
"""Longer pagination tokens are refused without being decoded."""

T = TypeVar("T")


def _bad_request(field: str, message: str) -> Problem:
    return Problem(
        400, status_phrase(400), f"{field} {message}", [{"field": field, "message": message}]
    )


def encode_cursor(data: Mapping[str, Any]) -> str:
    """``data`` (JSON-serialisable) as an opaque, url-safe token."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(token: str) -> dict[str, Any]:
    """The dict :func:`encode_cursor` made ``token`` from; a 400 :class:`Problem` naming
    ``paginationToken`` for anything else."""
    if not token or len(token) > MAX_CURSOR_CHARS or not token.isascii():
        raise _bad_request("paginationToken", "is not a token this API gave")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise _bad_request("paginationToken", "is not a token this API gave") from None
    if not isinstance(data, dict):
        raise _bad_request("paginationToken", "is not a token this API gave")
    return data


def page_size(value: int | None, default: int = 20, maximum: int = 100) -> int:
    """``value``, or ``default`` when absent; a 400 :class:`Problem` naming ``pageSize``
    unless it is between 1 and ``maximum``."""
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise _bad_request("pageSize", f"must be between 1 and {maximum}")
    return value


async def page_size_query(value: Annotated[int | None, Query(alias="pageSize")] = None) -> int:
    """FastAPI dependency: the ``pageSize`` query parameter, 20 by default, at most 100."""
    return page_size(value)


async def pagination_cursor(
    token: Annotated[str | None, Query(alias="paginationToken")] = None,
) -> dict[str, Any] | None:
    """FastAPI dependency: the decoded ``paginationToken`` query parameter, if any."""
    return None if token is None else decode_cursor(token)


PageSize = Annotated[int, Depends(page_size_query)]
"""Parameter annotation for the page size of a list endpoint."""

Cursor = Annotated[dict[str, Any] | None, Depends(pagination_cursor)]
"""Parameter annotation for the decoded cursor of a list endpoint (``None``: first page)."""


class PaginationDetails(ApiModel):
    """``{"nextToken": ...}``: the token of the next page, ``null`` on the last one."""

    next_token: str | None = None


class Page(ApiModel, Generic[T]):
    """A page of a list: ``{"results": [...], "paginationDetails": {"nextToken": ...}}``."""

    results: list[T]
    pagination_details: PaginationDetails = Field(default_factory=PaginationDetails)
