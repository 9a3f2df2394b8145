"""The reference deployment's three APIs, run in this process on the embedded default
(SQLite databases and broker under the test's own folder), with real JWT settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from activity_service.api import create_app as activity_app
from person_service.api import create_app as person_app
from reference_deployment import TOPOLOGY
from tenure_service.api import create_app as tenure_app
from tidings.brokers import connect
from tidings.config import Settings
from tidings.web import AuthSettings, mint_token

SECRET = "signing-secret-" + "k" * 40
WRITERS = "housing-writers"
AUDIENCE = "housing-apis"


@dataclass
class Apis:
    """One client per API (no credentials attached), and what they were built with."""

    settings: Settings
    auth: AuthSettings
    apps: dict[str, FastAPI]
    clients: dict[str, httpx.AsyncClient]

    def token(self, groups: Iterable[str] = (WRITERS,), **kw: object) -> str:
        kw.setdefault("audience", self.auth.audience)
        return mint_token(SECRET, subject="u-1", name="Ann", groups=groups, **kw)  # type: ignore[arg-type]

    def bearer(self, groups: Iterable[str] = (WRITERS,)) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(groups)}"}


async def open_apis(
    stack: AsyncExitStack, home: Path, auth: AuthSettings, broker_url: str | None = None
) -> Apis:
    settings = Settings(home=home, broker_url=broker_url or f"sqlite:///{home}/broker.db")
    broker = await connect(settings.broker_url)
    await broker.declare(TOPOLOGY)
    await broker.close()
    apps = {
        "person": person_app(settings, auth),
        "tenure": tenure_app(settings, auth),
        "activity": activity_app(settings, auth),
    }
    clients = {}
    for name, app in apps.items():
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://api")
        clients[name] = await stack.enter_async_context(client)
    return Apis(settings, auth, apps, clients)


@pytest.fixture
async def apis(tmp_path: Path) -> AsyncIterator[Apis]:
    auth = AuthSettings(secret=SECRET, audience=AUDIENCE, write_groups=frozenset({WRITERS}))
    async with AsyncExitStack() as stack:
        yield await open_apis(stack, tmp_path, auth)
