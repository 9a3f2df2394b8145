"""The HTTP side of a push: one POST, its answer read up to a small limit, and what that
answer means for the delivery.

Redirects are never followed (a 3xx is the endpoint's answer, like any other 4xx: the
event is dead-lettered), only ``http(s)`` is spoken, and no more than
:data:`RESPONSE_LIMIT` bytes of a response body are read: an endpoint can neither steer
the dispatcher elsewhere nor make it hold a large answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

from tidings import __version__
from tidings.listener.outcomes import DeadLetter, Retry

__all__ = [
    "EXCERPT_CHARS",
    "MAX_RETRY_AFTER",
    "RESPONSE_LIMIT",
    "Answer",
    "PushClient",
    "judge",
    "retry_after",
]

RESPONSE_LIMIT = 4096
"""Bytes of a response body read at most; the rest is dropped with the connection."""

EXCERPT_CHARS = 200
"""Characters of a response body kept in a retry or dead-letter reason."""

MAX_RETRY_AFTER = 3600.0
"""The longest ``Retry-After`` honoured, in seconds; a longer one is cut to this."""

RETRYABLE = frozenset({408, 429})
"""4xx answers that mean "later", not "never"; every 5xx means "later" too."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What an endpoint answered: status, ``Retry-After`` in seconds (None when absent or
    unreadable) and the start of the body as text."""

    status: int
    retry_after: float | None
    excerpt: str


class PushClient:
    """POSTs to one endpoint over its own connection pool (so that one endpoint's slow
    answers never hold a connection another endpoint needs). Use ``async with``."""

    def __init__(self, timeout: float, *, max_connections: int = 100) -> None:
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"user-agent": f"tidings-push/{__version__}", "accept-encoding": "identity"},
            trust_env=False,
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST ``body``; raises :class:`httpx.TransportError` when no answer came, and
        :class:`httpx.TimeoutException` when the whole exchange took longer than the
        timeout (an endpoint that answers one byte at a time included)."""
        read = bytearray()
        try:
            async with (
                asyncio.timeout(self.timeout),
                self._http.stream("POST", url, content=body, headers=headers) as response,
            ):
                async for chunk in response.aiter_raw():
                    read += chunk
                    if len(read) >= RESPONSE_LIMIT:
                        break
        except TimeoutError:
            raise httpx.TimeoutException(f"no answer within {self.timeout:g}s") from None
        return Answer(
            status=response.status_code,
            retry_after=retry_after(response.headers.get("retry-after")),
            excerpt=_excerpt(bytes(read[:RESPONSE_LIMIT])),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def judge(answer: Answer) -> None:
    """Return for a 2xx; raise :class:`Retry` (after ``Retry-After`` when given) for 408,
    429 and 5xx; raise :class:`DeadLetter` for any other status, with the status and the
    body's start as the reason."""
    if 200 <= answer.status < 300:
        return
    reason = f"HTTP {answer.status}" + (f": {answer.excerpt}" if answer.excerpt else "")
    if answer.status in RETRYABLE or answer.status >= 500:
        raise Retry(reason, after=answer.retry_after)
    raise DeadLetter(reason)


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay seconds or an HTTP date), at
    most :data:`MAX_RETRY_AFTER`; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _excerpt(body: bytes) -> str:
    """The start of a body as one line of printable text."""
    text = body.decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")
