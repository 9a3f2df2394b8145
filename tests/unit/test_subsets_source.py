"""Re-reading an entity from its owning API: what is sent, and what each answer becomes.

The source is a real HTTP server on loopback (uvicorn), so timeouts and refused connections
are real too.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tidings.errors import ConfigurationError, TidingsError
from tidings.subsets import SourceClient, SourceRecord, SourceRefused, SourceUnavailable

PERSON = {"id": "p1", "firstName": "Ann", "surname": "Lee", "versionNumber": 3}

ANSWERS: dict[str, Response] = {
    "etag": JSONResponse(PERSON, headers={"ETag": '"7"'}),
    "weak-etag": JSONResponse(PERSON, headers={"ETag": 'W/"8"'}),
    "body-version": JSONResponse(PERSON),
    "hash-etag": JSONResponse(PERSON, headers={"ETag": '"33a64df551425fcc55e"'}),
    "no-version": JSONResponse({"id": "p1"}),
    "missing": Response(status_code=404),
    "gone": Response(status_code=410),
    "broken": Response(status_code=500),
    "busy": Response(status_code=503, headers={"Retry-After": "3"}),
    "throttled": Response(
        status_code=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    ),
    "forbidden": Response(status_code=403),
    "unauthorised": Response(status_code=401),
    "bad": Response(status_code=400),
    "moved": Response(status_code=302, headers={"Location": "/persons/etag"}),
    "a-list": JSONResponse([PERSON]),
    "not-json": Response("<html>ok</html>", media_type="text/html"),
}


@dataclass
class Source:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    app = FastAPI()
    release = asyncio.Event()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    seen = Source(url=f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1")

    @app.get("/api/v1/persons/{name}")
    async def person(name: str, request: Request) -> Response:
        seen.requests.append(dict(request.headers))
        if name == "slow":
            await release.wait()
        return ANSWERS[name]

    config = uvicorn.Config(app, lifespan="off", ws="none", http="h11", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield seen
    finally:
        release.set()
        server.should_exit = True
        await task
        sock.close()


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("etag", 7),
        ("weak-etag", 8),
        ("body-version", 3),
        ("hash-etag", 3),
        ("no-version", None),
    ],
)
async def test_found_entity_comes_back_with_its_version(
    source: Source, name: str, version: int | None
) -> None:
    async with SourceClient(source.url, token="secret") as client:
        record = await client.fetch(f"/persons/{name}", correlation_id="c-1")
    assert record is not None
    assert record.version == version
    assert record.data["id"] == "p1"


async def test_token_and_correlation_id_are_sent(source: Source) -> None:
    async with SourceClient(source.url + "/", token="secret") as client:
        await client.fetch("persons/etag", correlation_id="corr-42")
        await client.fetch("/persons/etag", correlation_id=None)
    first, second = source.requests
    assert first["authorization"] == "Bearer secret"
    assert first["x-correlation-id"] == "corr-42"
    assert second["authorization"] == "Bearer secret"
    assert "x-correlation-id" not in second


async def test_token_function_is_called_for_every_request(source: Source) -> None:
    tokens = iter(["first", "second"])
    async with SourceClient(source.url, token=lambda: next(tokens)) as client:
        await client.fetch("/persons/etag", correlation_id=None)
        await client.fetch("/persons/etag", correlation_id=None)
    assert [r["authorization"] for r in source.requests] == ["Bearer first", "Bearer second"]


@pytest.mark.parametrize("name", ["missing", "gone"])
async def test_entity_that_does_not_exist_is_none(source: Source, name: str) -> None:
    async with SourceClient(source.url, token="secret") as client:
        assert await client.fetch(f"/persons/{name}", correlation_id=None) is None


@pytest.mark.parametrize(
    ("name", "status", "retry_after"),
    [("broken", 500, None), ("busy", 503, 3.0), ("throttled", 429, None)],
)
async def test_server_trouble_is_unavailable_so_the_listener_retries(
    source: Source, name: str, status: int, retry_after: float | None
) -> None:
    async with SourceClient(source.url, token="secret") as client:
        with pytest.raises(SourceUnavailable) as caught:
            await client.fetch(f"/persons/{name}", correlation_id=None)
    assert caught.value.status == status
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("forbidden", 403),
        ("unauthorised", 401),
        ("bad", 400),
        ("moved", 302),
        ("a-list", 200),
        ("not-json", 200),
    ],
)
async def test_refusal_or_a_non_entity_is_refused_never_retried(
    source: Source, name: str, status: int
) -> None:
    async with SourceClient(source.url, token="secret") as client:
        with pytest.raises(SourceRefused) as caught:
            await client.fetch(f"/persons/{name}", correlation_id=None)
    assert caught.value.status == status
    assert "secret" not in str(caught.value)
    assert len(source.requests) == 1  # the redirect was not followed


async def test_timeout_is_unavailable(source: Source) -> None:
    async with SourceClient(source.url, token="secret", timeout=0.2) as client:
        with pytest.raises(SourceUnavailable, match="timed out") as caught:
            await client.fetch("/persons/slow", correlation_id=None)
    assert caught.value.status is None


async def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    async with SourceClient(url, token="secret") as client:
        with pytest.raises(SourceUnavailable):
            await client.fetch("/persons/p1", correlation_id=None)


def test_both_errors_are_tidings_errors() -> None:
    assert issubclass(SourceUnavailable, TidingsError)
    assert issubclass(SourceRefused, TidingsError)


async def test_client_passed_in_stays_open_and_own_client_is_closed(source: Source) -> None:
    async with httpx.AsyncClient() as http:
        async with SourceClient(source.url, token="secret", client=http) as client:
            assert await client.fetch("/persons/etag", correlation_id=None) == SourceRecord(
                data=PERSON, version=7
            )
        assert not http.is_closed
    own = SourceClient(source.url, token="secret")
    await own.aclose()
    assert own._client.is_closed


@pytest.mark.parametrize("url", ["ftp://example.org", "not a url", "http://"])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        SourceClient(url, token="secret")


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        SourceClient("http://example.org", token="secret", timeout=0)


async def test_a_copy_that_is_down_is_passed_over_for_the_next(source: Source) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    async with SourceClient(f"{dead}, {source.url}/", token="secret") as client:
        record = await client.fetch("/persons/etag", correlation_id=None)
        assert record is not None and record.version == 7
        assert await client.fetch("/persons/missing", correlation_id=None) is None
    assert len(source.requests) == 2
    async with SourceClient(f"{source.url},{dead}", token="secret") as client:
        with pytest.raises(SourceRefused):
            await client.fetch("/persons/forbidden", correlation_id=None)
    assert len(source.requests) == 3, "a refusal was asked of another copy"


async def test_unavailable_only_when_no_copy_answers() -> None:
    urls = ",".join(f"http://127.0.0.1:{_free_port()}" for _ in range(2))
    async with SourceClient(urls, token="secret") as client:
        with pytest.raises(SourceUnavailable):
            await client.fetch("/persons/p1", correlation_id=None)
