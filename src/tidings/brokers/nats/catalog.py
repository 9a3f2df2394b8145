"""Subscription records: the policy every consumer of a subscription reads from the server.

One record per subscription, the last message on ``NS._subscription.<name>``. It holds the
subscription's policy and its *routes*: per topic, which event types it accepts from which
stream sequence on. Routes keep filter changes exact: a message is judged by the filter in
force when it was published, as if it had been routed at publish time. A topic dropped from a
subscription keeps a route that accepts nothing from the change on, until ``declare`` finds
its consumer drained and deletes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.brokers.nats.api import JetStreamApi
from tidings.brokers.nats.names import Names
from tidings.errors import UnknownSubscription
from tidings.topology import Subscription

__all__ = ["Policy", "Route", "load", "plan"]

Route = tuple[tuple[int, tuple[str, ...] | None], ...]
"""``(from_seq, event_types)`` steps in stream order; ``None`` accepts every type."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A subscription as its consumers see it."""

    name: str
    max_attempts: int
    in_flight: int
    lease_seconds: float
    routes: Mapping[str, Route] = field(default_factory=dict)
    record_seq: int = 0
    """Sequence of the record this was read from (0 when new); guards concurrent updates."""

    def accepts(self, topic: str, event_type: str, seq: int) -> bool:
        """True when a message of ``event_type`` at stream sequence ``seq`` of ``topic``
        belongs to this subscription."""
        chosen: tuple[str, ...] | None = ()
        for from_seq, types in self.routes.get(topic, ()):
            if from_seq > seq:
                break
            chosen = types
        return chosen is None or event_type in chosen

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "max_attempts": self.max_attempts,
                "in_flight": self.in_flight,
                "lease_seconds": self.lease_seconds,
                "routes": {
                    topic: [[seq, None if t is None else list(t)] for seq, t in steps]
                    for topic, steps in self.routes.items()
                },
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, record_seq: int) -> Policy:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            name=str(raw["name"]),
            max_attempts=int(raw["max_attempts"]),
            in_flight=int(raw["in_flight"]),
            lease_seconds=float(raw["lease_seconds"]),
            routes={
                str(topic): tuple(
                    (int(seq), None if types is None else tuple(types)) for seq, types in steps
                )
                for topic, steps in raw["routes"].items()
            },
            record_seq=record_seq,
        )


async def load(api: JetStreamApi, names: Names, subscription: str) -> Policy:
    """The current record of ``subscription``; raises :class:`UnknownSubscription`."""
    found = await api.last_msg(names.catalog_stream, names.catalog_subject(subscription))
    if found is None:
        raise UnknownSubscription(subscription)
    return Policy.from_json(found[3], found[0])


async def find(api: JetStreamApi, names: Names, subscription: str) -> Policy | None:
    try:
        return await load(api, names, subscription)
    except UnknownSubscription:
        return None


def plan(old: Policy | None, sub: Subscription, next_seqs: Mapping[str, int]) -> Policy:
    """The record for ``sub`` given the one stored before. ``next_seqs`` is, per topic in
    either, the sequence the topic's next message will get."""
    routes: dict[str, Route] = dict(old.routes) if old is not None else {}
    wanted = tuple(sorted(sub.event_types)) or None
    for topic in sub.topics:
        steps = routes.get(topic)
        if not steps:
            routes[topic] = ((0, wanted),)
        elif steps[-1][1] != wanted:
            routes[topic] = (*steps, (next_seqs[topic], wanted))
    for topic, steps in list(routes.items()):
        if topic not in sub.topics and steps[-1][1] != ():
            routes[topic] = (*steps, (next_seqs[topic], ()))
    return Policy(
        name=sub.name,
        max_attempts=sub.max_attempts,
        in_flight=sub.in_flight,
        lease_seconds=sub.lease_seconds,
        routes=routes,
        record_seq=old.record_seq if old is not None else 0,
    )


def dropped(policy: Policy, topic: str) -> int | None:
    """For a topic the subscription no longer reads: the sequence from which it accepts
    nothing. None while the topic is read."""
    steps = policy.routes.get(topic, ())
    if steps and steps[-1][1] == ():
        return steps[-1][0]
    return None
