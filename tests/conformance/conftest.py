"""Which backends the conformance suite runs against, and how each is opened.

Add a backend by adding one entry to :data:`BACKENDS`: a URL for the test's temporary
folder, the markers that select it (``pytest.mark.rabbitmq`` for a server-backed one) and
how long the suite waits before it concludes that nothing more will be delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..conftest import require_service
from ._support import Backend, BrokerFactory, memory_url


def _namespace() -> str:
    """Server-backed brokers are shared: each test gets names of its own."""
    return f"t{uuid.uuid4().hex[:12]}"


BACKENDS: dict[str, Backend] = {
    "memory": Backend(url=memory_url, quiet=0.1),
    "sqlite": Backend(url=lambda tmp: f"sqlite:///{tmp}/broker.db", quiet=0.5),
    "rabbitmq": Backend(
        url=lambda tmp: f"amqp://guest:guest@127.0.0.1:5672/?namespace={_namespace()}",
        marks=(pytest.mark.rabbitmq,),
        quiet=0.5,
    ),
    "nats": Backend(
        url=lambda tmp: f"nats://127.0.0.1:4222/?namespace={_namespace()}",
        marks=(pytest.mark.nats,),
        quiet=0.5,
    ),
}

SERVICES = {"rabbitmq": ("RabbitMQ", 5672), "nats": ("NATS", 4222)}


@pytest.fixture(
    params=[pytest.param(name, marks=spec.marks, id=name) for name, spec in BACKENDS.items()]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BrokerFactory]:
    """An async factory: ``broker = await backend(topology)`` opens the backend under test
    (the same state each time within one test); ``await backend.reopen(broker)`` closes it
    and opens it again. Every broker it opened is closed after the test."""
    if request.param in SERVICES:
        name, port = SERVICES[request.param]
        require_service(name, "127.0.0.1", port)
    factory = BrokerFactory(request.param, BACKENDS[request.param], tmp_path)
    try:
        yield factory
    finally:
        await factory.close_all()
