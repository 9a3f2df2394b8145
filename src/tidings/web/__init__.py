"""What every domain API built with tidings shares (FastAPI): verified JWT bearer auth,
the correlation id, ``application/problem+json`` errors, ``ETag``/``If-Match``, cursor
pagination, camelCase models, ``/health`` and the request's trace span. :func:`install`
wires them into an app."""

from tidings.web.app import HealthCheck, install
from tidings.web.auth import Principal, Reader, Writer, authenticated, verify_token, writer
from tidings.web.correlation import (
    CORRELATION_HEADER,
    CorrelationId,
    CorrelationIdMiddleware,
    correlation_id,
    current_correlation_id,
)
from tidings.web.etag import check_if_match, etag
from tidings.web.models import ApiModel
from tidings.web.pagination import (
    Cursor,
    Page,
    PageSize,
    PaginationDetails,
    decode_cursor,
    encode_cursor,
    page_size,
)
from tidings.web.problems import PROBLEM_JSON, FieldError, Problem, ProblemResponse
from tidings.web.settings import Algorithm, AuthSettings
from tidings.web.tokens import mint_token
from tidings.web.tracing import TraceContextMiddleware

__all__ = [
    "CORRELATION_HEADER",
    "PROBLEM_JSON",
    "Algorithm",
    "ApiModel",
    "AuthSettings",
    "CorrelationId",
    "CorrelationIdMiddleware",
    "Cursor",
    "FieldError",
    "HealthCheck",
    "Page",
    "PageSize",
    "PaginationDetails",
    "Principal",
    "Problem",
    "ProblemResponse",
    "Reader",
    "TraceContextMiddleware",
    "Writer",
    "authenticated",
    "check_if_match",
    "correlation_id",
    "current_correlation_id",
    "decode_cursor",
    "encode_cursor",
    "etag",
    "install",
    "mint_token",
    "page_size",
    "verify_token",
    "writer",
]
