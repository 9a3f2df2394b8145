"""``python -m person_service api [--port 8001]`` or ``python -m person_service listener``."""

from __future__ import annotations

import os

from housing_contracts import catalog
from person_service.api import create_app
from person_service.listener import SUBSCRIPTION, build_listener
from person_service.tables import metadata
from tidings.config import Settings
from tidings.runner import rereads, run_listener, service_main
from tidings.subsets import SourceClient


async def listen(settings: Settings) -> None:
    """Consume ``person-listener``, re-reading the Tenure API where events are thin."""
    source = os.environ.get("TIDINGS_TENURE_API_URL", "http://127.0.0.1:8002")
    token = os.environ.get("TIDINGS_SERVICE_TOKEN", "")
    async with SourceClient(source, token=token) as client:
        await run_listener(
            lambda: build_listener(client, reread=rereads(SUBSCRIPTION.name)),
            SUBSCRIPTION,
            settings=settings,
            domain="person",
            metadata=metadata,
            catalog=catalog,
        )


if __name__ == "__main__":
    service_main("person_service", api=create_app, listener=listen, port=8001)
