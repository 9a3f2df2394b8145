"""What the conformance tests share: opening a backend, building messages and topologies,
and the check every test ends with: the multiset of delivered ids is exactly the expected one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tidings.brokers import Broker, Consumer, Delivery, Message, connect
from tidings.topology import Backoff, Subscription, Topology

TOPICS = ("orders", "people")


@dataclass(frozen=True)
class Backend:
    """How the suite opens one backend. ``url`` gets the test's temporary folder; ``quiet``
    is how long to wait before concluding that nothing more will be delivered."""

    url: Callable[[Path], str]
    marks: tuple[pytest.MarkDecorator, ...] = ()
    quiet: float = 0.2


def memory_url(tmp_path: Path) -> str:
    # A name of its own, so that every open() in one test reaches the same broker.
    return f"memory://conformance-{uuid.uuid4().hex}"


class BrokerFactory:
    """Opens the backend under test; see the ``backend`` fixture."""

    def __init__(self, name: str, spec: Backend, tmp_path: Path) -> None:
        self.name = name
        self.url = spec.url(tmp_path)
        self.quiet = spec.quiet
        self._opened: list[Broker] = []

    async def __call__(self, topology: Topology | None = None) -> Broker:
        broker = await connect(self.url)
        if not any(b is broker for b in self._opened):
            self._opened.append(broker)
        if topology is not None:
            await broker.declare(topology)
        return broker

    async def close(self, broker: Broker) -> None:
        self._opened = [b for b in self._opened if b is not broker]
        await broker.close()

    async def reopen(self, broker: Broker) -> Broker:
        """Close ``broker`` and open the same backend again (same file, same server)."""
        await self.close(broker)
        return await self()

    async def close_all(self) -> None:
        """Close every broker; the last one first deletes a server-side namespace, if its
        backend has one, so that tests leave nothing behind on a shared server."""
        while self._opened:
            broker = self._opened.pop()
            try:
                delete = getattr(broker, "delete_namespace", None)
                if not self._opened and delete is not None:
                    await delete()
            finally:
                await broker.close()


def sub(name: str, topics: Sequence[str] = ("orders",), **policy: Any) -> Subscription:
    """A subscription with test-sized defaults: quick backoff, long lease, roomy prefetch."""
    policy.setdefault("backoff", Backoff(initial=0.01, maximum=0.05, jitter=0))
    policy.setdefault("in_flight", 100)
    policy.setdefault("lease_seconds", 30.0)
    return Subscription(name=name, topics=tuple(topics), **policy)


def topology(*subscriptions: Subscription, topics: Iterable[str] = TOPICS) -> Topology:
    return Topology.build(list(topics), subscriptions)


def msg(name: str, *, key: str = "", event_type: str = "Created") -> Message:
    return Message(
        id=name, event_type=event_type, key=key, body=name.encode(), headers={"name": name}
    )


def msgs(prefix: str, count: int, **kwargs: Any) -> list[Message]:
    return [msg(f"{prefix}-{i}", **kwargs) for i in range(count)]


def ids(messages: Iterable[Message | Delivery]) -> list[str]:
    return [m.message.id if isinstance(m, Delivery) else m.id for m in messages]


async def take(consumer: Consumer, count: int, *, timeout: float = 5.0) -> list[Delivery]:
    """The next ``count`` deliveries, unsettled."""
    taken: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(taken) < count:
            taken.append(await consumer.__anext__())
    return taken


async def next_within(consumer: Consumer, seconds: float) -> Delivery | None:
    """The next delivery if one arrives within ``seconds``, else None."""
    try:
        return await asyncio.wait_for(consumer.__anext__(), seconds)
    except TimeoutError:
        return None


async def assert_nothing_arrives(consumer: Consumer, seconds: float) -> None:
    delivery = await next_within(consumer, seconds)
    if delivery is not None:
        raise AssertionError(
            f"unexpected delivery of {delivery.message.id!r} (attempt {delivery.attempt})"
        )


def assert_same_ids(got: Iterable[str], expected: Iterable[str]) -> None:
    got_count, expected_count = Counter(got), Counter(expected)
    missing = expected_count - got_count
    extra = got_count - expected_count
    assert not missing and not extra, (
        f"lost {sorted(missing.elements())[:20]}, unexpected {sorted(extra.elements())[:20]}"
    )


async def expect_exactly(
    broker: Broker,
    subscription: str,
    expected: Iterable[str],
    *,
    quiet: float,
    timeout: float = 10.0,
    prefetch: int | None = None,
) -> list[Delivery]:
    """Consume and ack ``subscription`` until as many deliveries as ``expected`` arrived,
    check that nothing more comes within ``quiet`` seconds and nothing is left pending, and
    that the delivered ids are ``expected`` as a multiset: nothing lost, nothing extra."""
    wanted = list(expected)
    got: list[Delivery] = []
    async with broker.consume(subscription, prefetch=prefetch) as consumer:
        try:
            async with asyncio.timeout(timeout):
                while len(got) < len(wanted):
                    delivery = await consumer.__anext__()
                    got.append(delivery)
                    await delivery.ack()
        except TimeoutError:
            pass  # the comparison below names what is missing
        while (late := await next_within(consumer, quiet)) is not None:
            got.append(late)
            await late.ack()
    assert_same_ids(ids(got), wanted)
    depth = await broker.depth(subscription)
    assert depth.pending == 0, f"{subscription} still holds {depth}"
    return got
