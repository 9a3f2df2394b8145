"""Declaring a topology, reading a subscription's policy and depth, deleting a namespace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

import aiormq
from pamqp.commands import Basic
from pamqp.common import FieldValue

from tidings.brokers.base import Depth
from tidings.brokers.rabbitmq.link import Link, Outgoing, Wire, is_not_found
from tidings.brokers.rabbitmq.names import DELAY_TIERS_MS, Names
from tidings.brokers.rabbitmq.records import (
    Policy,
    give_back,
    give_back_tags,
    read_policy_records,
    take_all,
)
from tidings.errors import ConfigurationError, UnknownSubscription
from tidings.topology import Subscription, Topology

__all__ = ["declare", "delete_namespace", "depth", "exists", "load_policy"]

_POLICY_TRIES = 20
_POLICY_PAUSE = 0.025


async def declare(link: Link, names: Names, topology: Topology) -> dict[str, Policy]:
    """Create what ``topology`` names (idempotent), bind each subscription to what it
    accepts now and unbind what it accepted before but not now, and store its policy.
    Returns the policies. Raises :class:`ConfigurationError` when a queue exists with other
    arguments (a namespace created with another ``queue_type``)."""
    entries = [("topic", t.name) for t in topology.topics]
    entries += [("subscription", s.name) for s in topology.subscriptions]
    async with link.session("declaring the topology") as wire:
        await _queue(wire, names.catalog, names.arguments())
        await _register(link, wire, names, entries)
        for topic in topology.topics:
            await wire.exchange_declare(
                names.exchange(topic.name), exchange_type="topic", durable=True
            )
        return {s.name: await _subscription(link, wire, names, s) for s in topology.subscriptions}


async def _queue(wire: Wire, name: str, arguments: dict[str, FieldValue]) -> None:
    try:
        await wire.queue_declare(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"queue {name!r} exists with other arguments ({exc}); open the broker with the "
            "queue_type the namespace was created with"
        ) from None


async def _register(link: Link, wire: Wire, names: Names, entries: list[tuple[str, str]]) -> None:
    """Add the entries missing from the namespace catalog."""
    taken = await take_all(wire, names.catalog)
    known = set()
    for delivered in taken:
        try:
            data = json.loads(delivered.body)
            known.add((str(data["kind"]), str(data["name"])))
        except (ValueError, KeyError, TypeError):
            continue
    missing = [e for e in dict.fromkeys(entries) if e not in known]
    records = [
        Outgoing(
            "",
            names.catalog,
            json.dumps({"kind": kind, "name": name}).encode(),
            Basic.Properties(delivery_mode=2),
        )
        for kind, name in missing
    ]
    await link.publish(records, "catalog records")
    await give_back(wire, names.catalog, taken)


async def _subscription(link: Link, wire: Wire, names: Names, sub: Subscription) -> Policy:
    queue, policy_queue = names.queue(sub.name), names.policy(sub.name)
    for name in (queue, names.dead(sub.name), policy_queue):
        await _queue(wire, name, names.arguments())
    for tier in DELAY_TIERS_MS:
        await _queue(wire, names.delay(sub.name, tier), names.delay_arguments(sub.name, tier))
    wanted = Policy.of(sub)
    old, tags = await read_policy_records(wire, policy_queue)
    for topic, key in sorted(wanted.bindings):
        await wire.queue_bind(queue, names.exchange(topic), routing_key=key)
    if old is not None:
        for topic, key in sorted(old.bindings - wanted.bindings):
            await wire.queue_unbind(queue, names.exchange(topic), routing_key=key)
        if _same(old, wanted):
            await give_back_tags(wire, policy_queue, tags)
            return old
    await link.publish([wanted.record(policy_queue)], "a policy record")
    for tag in tags:
        await wire.basic_ack(tag)
    return wanted


def _same(a: Policy, b: Policy) -> bool:
    return (a.max_attempts, a.in_flight, a.bindings) == (b.max_attempts, b.in_flight, b.bindings)


async def load_policy(link: Link, names: Names, subscription: str) -> Policy:
    """The stored policy of ``subscription``; the defaults of
    :class:`~tidings.topology.Subscription` when it has none. Raises
    :class:`UnknownSubscription` when its queue does not exist."""
    async with link.session(f"reading the policy of {subscription}") as wire:
        await exists(wire, names, subscription)
        for _ in range(_POLICY_TRIES):
            try:
                policy, tags = await read_policy_records(wire, names.policy(subscription))
            except aiormq.exceptions.ChannelNotFoundEntity:
                return Policy()
            if policy is not None:
                await give_back_tags(wire, names.policy(subscription), tags)
                return policy
            await asyncio.sleep(_POLICY_PAUSE)
    return Policy()


async def exists(wire: Wire, names: Names, subscription: str) -> int:
    """Ready messages of ``subscription``; raises :class:`UnknownSubscription` if none."""
    try:
        ok = await wire.queue_declare(names.queue(subscription), passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise UnknownSubscription(subscription) from None
    return ok.message_count or 0


async def depth(link: Link, names: Names, subscription: str, waiting: int, in_flight: int) -> Depth:
    """Ready, delayed and dead from RabbitMQ's counts of ready messages. The caller gives
    what its consumers received but have not handed out (added to ready) and what they
    handed out (in flight): RabbitMQ reports unacknowledged counts only to its management
    plugin."""
    async with link.session(f"reading the depth of {subscription}") as wire:
        ready = await exists(wire, names, subscription)
        try:
            delayed = 0
            for queue in names.delays(subscription):
                delayed += (await wire.queue_declare(queue, passive=True)).message_count or 0
            dead = (await wire.queue_declare(names.dead(subscription), passive=True)).message_count
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise UnknownSubscription(subscription) from None
    return Depth(ready=ready + waiting, in_flight=in_flight, delayed=delayed, dead=dead or 0)


async def delete_namespace(
    link: Link, names: Names, topics: Iterable[str], subscriptions: Iterable[str]
) -> None:
    """Delete every exchange and queue of the namespace's catalog, of ``topics`` and of
    ``subscriptions``, then the catalog."""
    all_topics, all_subs = set(topics), set(subscriptions)
    try:
        async with link.session("reading the namespace catalog") as wire:
            for delivered in await take_all(wire, names.catalog):
                try:
                    data = json.loads(delivered.body)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("kind") == "topic":
                    all_topics.add(str(data.get("name")))
                elif isinstance(data, dict) and data.get("kind") == "subscription":
                    all_subs.add(str(data.get("name")))
    except aiormq.exceptions.AMQPError as exc:
        if not is_not_found(exc):
            raise
    async with link.session("deleting the namespace") as wire:
        for sub in sorted(all_subs):
            for queue in names.queues(sub):
                await wire.queue_delete(queue)
        for topic in sorted(all_topics):
            await wire.exchange_delete(names.exchange(topic))
        await wire.queue_delete(names.catalog)
