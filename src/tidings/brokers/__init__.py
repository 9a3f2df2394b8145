"""Brokers: the :class:`Broker` protocol and its backends, picked by URL.

=====================  ==========================================================
``memory://[name]``    in-process, for unit tests; the same name shares one broker
``sqlite:///path``     the embedded default: one file shared by local processes
``amqp://...``         RabbitMQ (``pip install 'tidings[rabbitmq]'``)
``nats://...``         NATS JetStream (``pip install 'tidings[nats]'``)
=====================  ==========================================================

Server-backed URLs take ``?namespace=NAME``: every name the broker creates on the server is
prefixed with it, so that several deployments (or test runs) can share one server.

Backends import lazily, so a missing optional client only matters to its own URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tidings.brokers.base import (
    Broker,
    Capabilities,
    Consumer,
    DeadLetter,
    Delivery,
    Depth,
    Message,
    Tail,
)
from tidings.brokers.urls import without_password
from tidings.errors import ConfigurationError, MissingDependency

__all__ = [
    "Broker",
    "Capabilities",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "Depth",
    "Message",
    "Tail",
    "connect",
]


async def connect(url: str) -> Broker:
    """Open the broker that ``url`` names. Raises :class:`ConfigurationError` for a URL no
    backend understands, and :class:`~tidings.errors.MissingDependency` with an install hint
    when the backend's client library is missing."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from tidings.brokers.memory import MemoryBroker

        return MemoryBroker.named(urlsplit(url).netloc)
    if scheme == "sqlite":
        from tidings.brokers.sqlite import SqliteBroker

        return await SqliteBroker.open(url)
    if scheme in ("amqp", "amqps"):
        try:
            from tidings.brokers.rabbitmq import RabbitBroker
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in ("aio_pika", "aiormq", "pamqp"):
                raise MissingDependency("aio-pika", "rabbitmq") from None
            raise
        return await RabbitBroker.open(url)
    if scheme in ("nats", "tls"):
        try:
            from tidings.brokers.nats import NatsBroker
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "nats":
                raise MissingDependency("nats-py", "nats") from None
            raise
        return await NatsBroker.open(url)
    raise ConfigurationError(
        f"broker URL {without_password(url)!r}: unknown scheme {scheme!r} "
        "(expected memory://, sqlite:///, amqp:// or nats://)"
    )
