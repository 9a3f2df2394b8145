"""Re-reading an entity from the API that owns it.

Some events cannot be trusted for their data: the council system's publishers send no
``entityVersion``, and a subscription may prefer the source's current state anyway. Such a
listener reads the entity again with :class:`SourceClient` and writes what it got, guarded
with the version the source reports (a repeated read at the same version is allowed to
repair a copy that drifted).

What a read can end in, and what a listener should do with it:

- a :class:`SourceRecord`: the entity exists; apply it.
- ``None`` (404 or 410): the entity does not exist (any more).
- :class:`SourceUnavailable` (5xx, 408, 425, 429, timeouts, connection errors): the
  source may answer later; let it propagate, or raise
  ``tidings.listener.Retry(after=exc.retry_after)``.
- :class:`SourceRefused` (any other status, or a body that is not a JSON object): asking
  again will not help (an expired or rejected token, a forbidden or malformed request);
  raise ``tidings.listener.DeadLetter(str(exc))`` so the event waits for an operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from tidings.errors import ConfigurationError, TidingsError
from tidings.events.model import MAX_ENTITY_VERSION

__all__ = ["SourceClient", "SourceRecord", "SourceRefused", "SourceUnavailable"]

_ETAG = re.compile(r'^(?:W/)?"?(\d{1,19})"?$')
_GONE = frozenset({404, 410})
_TRANSIENT = frozenset({408, 425, 429})


class SourceUnavailable(TidingsError):
    """The source could not answer now (5xx, 408, 425, 429, timeout, connection error); a
    later attempt may succeed. ``retry_after`` is the source's ``Retry-After`` in seconds,
    when it sent one."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SourceRefused(TidingsError):
    """The source refused the read (401, 403, 400, ...) or answered with something that is
    not an entity; retrying will not help. Listeners dead-letter the event."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SourceRecord:
    """An entity as its source returned it. ``version`` is the entity's version number
    (from the ``ETag``, else the body's ``versionNumber``), or None when it reports none."""

    data: dict[str, Any]
    version: int | None


class SourceClient:
    """Reads entities from one API at ``base_url``, authenticated with a bearer token.

    ``base_url`` may list several copies of the API, comma separated: a read that finds one
    unavailable (a connection error, a timeout, a 5xx) tries the next, and fails with
    :class:`SourceUnavailable` only when none answered.

    ``token`` is a string or a function called before every request (so a rotating token
    is always current). Each request has ``timeout`` seconds in all, also on a ``client``
    passed in; that client stays open after :meth:`aclose`, one created here is closed.
    Redirects are not followed (a redirect is refused).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | Callable[[], str],
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        for each in urls or [base_url]:
            try:
                url = httpx.URL(each)
            except httpx.InvalidURL:
                url = httpx.URL()
            if url.scheme not in ("http", "https") or not url.host:
                raise ConfigurationError(f"base_url: expected an http(s) URL, got {each!r}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout: expected a positive number, got {timeout!r}")
        self.base_urls = tuple(urls)
        self.base_url = urls[0]
        self._token = token
        self._timeout = httpx.Timeout(timeout)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def fetch(self, path: str, *, correlation_id: str | None) -> SourceRecord | None:
        """GET ``base_url`` + ``path`` (path segments already quoted), sending the token
        and, when given, ``x-correlation-id``. Returns the record, or None when the entity
        does not exist; raises :class:`SourceUnavailable` (from the last copy tried when
        none answered) or :class:`SourceRefused`."""
        unavailable: SourceUnavailable | None = None
        for base in self.base_urls:
            try:
                return await self._fetch(f"{base}/{path.lstrip('/')}", correlation_id)
            except SourceUnavailable as exc:
                unavailable = exc
        assert unavailable is not None
        raise unavailable

    async def _fetch(self, url: str, correlation_id: str | None) -> SourceRecord | None:
        token = self._token() if callable(self._token) else self._token
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if correlation_id is not None:
            headers["x-correlation-id"] = correlation_id
        try:
            response = await self._client.get(
                url, headers=headers, timeout=self._timeout, follow_redirects=False
            )
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(f"GET {url}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise SourceUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status in _GONE:
            return None
        if status >= 500 or status in _TRANSIENT:
            raise SourceUnavailable(
                f"GET {url}: HTTP {status}",
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if not 200 <= status < 300:
            raise SourceRefused(f"GET {url}: HTTP {status}", status=status)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SourceRefused(f"GET {url}: the body is not a JSON object", status=status)
        version = _etag_version(response.headers.get("ETag"))
        if version is None:
            version = _body_version(data.get("versionNumber"))
        return SourceRecord(data=data, version=version)

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> SourceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _etag_version(etag: str | None) -> int | None:
    match = _ETAG.match(etag.strip()) if etag else None
    if match is None:
        return None
    value = int(match.group(1))
    return value if value <= MAX_ENTITY_VERSION else None


def _body_version(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_ENTITY_VERSION else None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: leave the delay to the subscription's backoff
    return seconds if 0 <= seconds < float("inf") else None
