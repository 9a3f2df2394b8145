"""What a broker object's parts share: the connection, the names, the policies it knows and
its live consumers."""

from __future__ import annotations

import asyncio
from typing import Protocol

from tidings.brokers.rabbitmq.admin import load_policy
from tidings.brokers.rabbitmq.link import Link
from tidings.brokers.rabbitmq.names import Names
from tidings.brokers.rabbitmq.records import Policy

__all__ = ["Hub"]


class _Holder(Protocol):
    subscription: str

    @property
    def handed(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    async def until_quiet(self) -> None: ...

    async def close(self) -> None: ...


class Hub:
    """Shared by one :class:`~tidings.brokers.rabbitmq.RabbitBroker` and its consumers."""

    def __init__(self, link: Link, names: Names) -> None:
        self.link = link
        self.names = names
        self.policies: dict[str, Policy] = {}
        """Policies this broker object declared: the newest it knows."""
        self.topics: set[str] = set()
        """Topics known to exist (declared or checked by this broker object)."""
        self.consumers: set[_Holder] = set()

    async def policy(self, subscription: str) -> Policy:
        """The policy this broker object declared for ``subscription``, else the stored one.
        Raises :class:`~tidings.errors.UnknownSubscription` if it does not exist."""
        known = self.policies.get(subscription)
        if known is not None:
            return known
        return await load_policy(self.link, self.names, subscription)

    async def held(self, subscription: str) -> tuple[int, int]:
        """Deliveries of ``subscription`` that this broker object's consumers received and
        have not handed out yet, and those handed out and not settled; after waiting (up to a
        moment) for those RabbitMQ is still pushing to them."""
        mine = [c for c in self.consumers if c.subscription == subscription]
        await asyncio.gather(*(c.until_quiet() for c in mine))
        return sum(c.waiting for c in mine), sum(c.handed for c in mine)
