"""``python -m tenure_service api [--port 8002]`` or ``python -m tenure_service listener``."""

from __future__ import annotations

import os

from housing_contracts import catalog
from tenure_service.api import create_app
from tenure_service.listener import SUBSCRIPTION, build_listener
from tenure_service.tables import metadata
from tidings.config import Settings
from tidings.runner import rereads, run_listener, service_main
from tidings.subsets import SourceClient


async def listen(settings: Settings) -> None:
    """Consume ``tenure-listener``, re-reading the Person API where events are thin."""
    source = os.environ.get("TIDINGS_PERSON_API_URL", "http://127.0.0.1:8001")
    token = os.environ.get("TIDINGS_SERVICE_TOKEN", "")
    async with SourceClient(source, token=token) as client:
        await run_listener(
            lambda: build_listener(client, reread=rereads(SUBSCRIPTION.name)),
            SUBSCRIPTION,
            settings=settings,
            domain="tenure",
            metadata=metadata,
            catalog=catalog,
        )


if __name__ == "__main__":
    service_main("tenure_service", api=create_app, listener=listen, port=8002)
