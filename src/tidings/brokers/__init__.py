"""Brokers: the :class:`Broker` protocol and its backends, picked by URL.

=====================  ==========================================================
``memory://[name]``    in-process, for unit tests; the same name shares one broker
``sqlite:///path``     the embedded default: one file shared by local processes
=====================  ==========================================================

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
)
from tidings.errors import ConfigurationError

__all__ = [
    "Broker",
    "Capabilities",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "Depth",
    "Message",
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
    raise ConfigurationError(
        f"broker URL {url!r}: unknown scheme {scheme!r} (expected memory:// or sqlite:///)"
    )
