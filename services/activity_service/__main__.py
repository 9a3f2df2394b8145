"""``python -m activity_service api [--port 8003]`` or ``python -m activity_service listener``."""

from __future__ import annotations

from activity_service.api import create_app
from activity_service.listener import SUBSCRIPTION, build_listener
from activity_service.tables import metadata
from tidings.config import Settings
from tidings.runner import run_listener, service_main


async def listen(settings: Settings) -> None:
    """Consume ``activity-listener``: every event, in batches (the handler only writes)."""
    await run_listener(
        build_listener,
        SUBSCRIPTION,
        settings=settings,
        domain="activity",
        metadata=metadata,
        batch_size=32,
    )


if __name__ == "__main__":
    service_main("activity_service", api=create_app, listener=listen, port=8003)
