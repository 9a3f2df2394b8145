"""Declare, depth, dead letters, redrive, purge and namespace deletion on JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from tidings.brokers.base import DeadLetter, Depth
from tidings.brokers.nats import catalog, codec
from tidings.brokers.nats.api import ApiError, NotFound, StoredMsg
from tidings.brokers.nats.catalog import Policy
from tidings.brokers.nats.core import Core
from tidings.brokers.nats.names import Names
from tidings.errors import BrokerError
from tidings.topology import Subscription, Topology

__all__ = ["dead_letters", "declare", "delete_namespace", "depth", "purge", "redrive"]

_WRONG_LAST_SEQUENCE = 10071
KEEP_SECONDS = 7 * 24 * 3600
"""How long topic and redrive streams keep a message (``max_age``), read or not: as long as
the outbox keeps published rows for ``tidings replay``. Streams use limits retention, not
interest retention: nats-server 2.9 can lose acknowledged messages of an interest stream
across a graceful restart (an emptied stream comes back with an older last sequence, and
consumers skip the sequences it hands out again)."""
_NANOS = re.compile(r"(\.\d{6})\d+")
_PAGE = 100


def _stream(name: str, subject: str, retention: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "subjects": [subject],
        "retention": retention,
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        **extra,
    }


def _consumer(policy: Policy, names: Names, topic: str | None) -> dict[str, Any]:
    """A topic consumer starts at the next message (a subscription gets only what is
    published after it exists); the redrive consumer takes everything on its subject."""
    where = f"topic {topic}" if topic is not None else "redrive"
    return {
        "durable_name": policy.name,
        "description": f"tidings subscription {policy.name}, {where}",
        "deliver_policy": "new" if topic is not None else "all",
        "ack_policy": "explicit",
        "ack_wait": int(policy.lease_seconds * 1e9),
        "max_deliver": -1,
        "max_ack_pending": -1,
        "replay_policy": "instant",
        "filter_subject": (
            names.topic_subjects(topic) if topic is not None else names.redrive_subject(policy.name)
        ),
    }


async def declare(core: Core, topology: Topology) -> None:
    names, api, replicas = core.names, core.api, core.options.replicas
    await asyncio.gather(
        api.ensure_stream(_stream(names.dead_stream, names.dead_subject("*"), "limits", replicas)),
        api.ensure_stream(
            _stream(
                names.redrive_stream,
                names.redrive_subject("*"),
                "limits",
                replicas,
                max_age=KEEP_SECONDS * 1_000_000_000,
            )
        ),
        api.ensure_stream(
            _stream(
                names.catalog_stream,
                names.catalog_subject("*"),
                "limits",
                replicas,
                max_msgs_per_subject=1,
            )
        ),
        *(
            api.ensure_stream(
                _stream(
                    names.topic_stream(t.name),
                    names.topic_subjects(t.name),
                    "limits",
                    replicas,
                    max_age=KEEP_SECONDS * 1_000_000_000,
                )
            )
            for t in topology.topics
        ),
    )
    for sub in topology.subscriptions:
        await _declare_subscription(core, sub)


async def _declare_subscription(core: Core, sub: Subscription) -> None:
    """Consumers first, then the record that tells consumers to read them. Concurrent
    declares of one subscription settle on one record (the write names the record it
    replaces, and a lost race starts over)."""
    names, api = core.names, core.api
    for _ in range(10):
        old = await catalog.find(api, names, sub.name)
        next_seqs: dict[str, int] = {}
        if old is not None:
            for topic in set(old.routes) | set(sub.topics):
                info = await api.stream_info(names.topic_stream(topic))
                next_seqs[topic] = int(info["state"]["last_seq"]) + 1
        policy = catalog.plan(old, sub, next_seqs)
        drained = [t for t in policy.routes if await _drained(core, policy, t)]
        policy = Policy(
            name=policy.name,
            max_attempts=policy.max_attempts,
            in_flight=policy.in_flight,
            lease_seconds=policy.lease_seconds,
            routes={t: r for t, r in policy.routes.items() if t not in drained},
            record_seq=policy.record_seq,
        )
        for topic in policy.routes:
            await api.ensure_consumer(names.topic_stream(topic), _consumer(policy, names, topic))
        await api.ensure_consumer(names.redrive_stream, _consumer(policy, names, None))
        if old is None or old.to_json() != policy.to_json():
            try:
                await core.publish(
                    [(names.catalog_subject(sub.name), codec.Encoded(policy.to_json(), {}))],
                    expected_last_subject_seq=policy.record_seq,
                )
            except ApiError as exc:
                if exc.err_code == _WRONG_LAST_SEQUENCE:
                    continue
                raise
        for topic in drained:
            with contextlib.suppress(NotFound):
                await api.delete_consumer(names.topic_stream(topic), sub.name)
        return
    raise BrokerError(f"subscription {sub.name}: its record kept changing while declaring it")


async def _drained(core: Core, policy: Policy, topic: str) -> bool:
    """A dropped topic's consumer holds nothing the subscription still accepts."""
    boundary = catalog.dropped(policy, topic)
    if boundary is None:
        return False
    try:
        info = await core.api.consumer_info(core.names.topic_stream(topic), policy.name)
    except NotFound:
        return True
    if int(info.get("num_ack_pending", 0)):
        return False
    delivered = int(info.get("delivered", {}).get("stream_seq", 0))
    return int(info.get("num_pending", 0)) == 0 or delivered >= boundary - 1


async def depth(core: Core, subscription: str) -> Depth:
    """``ready``: never delivered (JetStream's ``num_pending``) plus what this broker object
    gave back and no consumer took yet; ``delayed``: retries this object asked for whose
    delay has not passed; ``in_flight``: every other unacknowledged delivery (so retries and
    give-backs of other processes count here); ``dead``: the dead letters."""
    names, api = core.names, core.api
    policy = await catalog.load(api, names, subscription)
    streams = [names.topic_stream(t) for t in policy.routes] + [names.redrive_stream]
    infos = await asyncio.gather(
        *(_consumer_info(core, stream, subscription) for stream in streams)
    )
    pending = sum(int(i.get("num_pending", 0)) for i in infos)
    unacked = sum(int(i.get("num_ack_pending", 0)) for i in infos)
    returned, delayed = core.returns.counts(subscription)
    delayed = min(delayed, unacked)
    returned = min(returned, unacked - delayed)
    return Depth(
        ready=pending + returned,
        in_flight=unacked - returned - delayed,
        delayed=delayed,
        dead=await _dead_count(core, subscription),
    )


async def _consumer_info(core: Core, stream: str, consumer: str) -> dict[str, Any]:
    try:
        return await core.api.consumer_info(stream, consumer)
    except NotFound:
        return {}


async def _dead_count(core: Core, subscription: str) -> int:
    subject = core.names.dead_subject(subscription)
    info = await core.api.stream_info(core.names.dead_stream, subjects_filter=subject)
    return int((info["state"].get("subjects") or {}).get(subject, 0))


async def dead_letters(core: Core, subscription: str, limit: int) -> list[DeadLetter]:
    """Oldest first: in the order they were dead-lettered."""
    await catalog.load(core.api, core.names, subscription)
    return [
        _dead_letter(subscription, stored) async for stored in _stored(core, subscription, limit)
    ]


async def _stored(
    core: Core, subscription: str, limit: int, start: int = 1, last: int | None = None
) -> AsyncIterator[StoredMsg]:
    """Up to ``limit`` dead letters of ``subscription`` from stream sequence ``start`` on
    (up to ``last``), oldest first."""
    subject = core.names.dead_subject(subscription)
    seq, count = start, 0
    while count < limit:
        stored = await core.api.get_msg(core.names.dead_stream, seq, next_by_subject=subject)
        if stored is None or (last is not None and stored[0] > last):
            return
        yield stored
        seq, count = stored[0] + 1, count + 1


def _dead_letter(subscription: str, stored: StoredMsg) -> DeadLetter:
    seq, _, headers, body, stored_at = stored
    message, meta = codec.decode(headers, body, "", str(seq))
    last = _datetime(meta.get(codec.H_LAST_FAILED)) or _datetime(stored_at)
    return DeadLetter(
        id=str(seq),
        subscription=subscription,
        topic=meta.get(codec.H_TOPIC, ""),
        message=message,
        reason=meta.get(codec.H_REASON, ""),
        attempts=int(meta.get(codec.H_ATTEMPTS, "0") or 0),
        first_failed_at=_datetime(meta.get(codec.H_FIRST_FAILED)),
        last_failed_at=last or datetime.now(UTC),
    )


async def redrive(core: Core, subscription: str, ids: Sequence[str] | None) -> int:
    """Copy dead letters to the subscription's redrive subject, which only its own redrive
    consumer reads (a new message there: attempts count from 1 again), then delete them
    from the dead letters. If that fails in between, the dead letter stays; redriving it
    again within two minutes does not copy it twice (the copy's id is the dead letter's)."""
    names, api = core.names, core.api
    await catalog.load(api, names, subscription)
    if ids is not None:
        subject, chosen = names.dead_subject(subscription), []
        for wanted in dict.fromkeys(ids):
            if wanted.isdigit():
                stored = await api.get_msg(names.dead_stream, int(wanted))
                if stored is not None and stored[1] == subject:
                    chosen.append(stored)
        moved = 0
        for i in range(0, len(chosen), _PAGE):
            moved += await _redrive(core, subscription, chosen[i : i + _PAGE])
        return moved
    last = int((await api.stream_info(names.dead_stream))["state"]["last_seq"])
    moved, start = 0, 1
    while page := [s async for s in _stored(core, subscription, _PAGE, start, last)]:
        moved += await _redrive(core, subscription, page)
        start = page[-1][0] + 1
    return moved


async def _redrive(core: Core, subscription: str, page: list[StoredMsg]) -> int:
    copies = []
    for seq, _, headers, body, _ in page:
        message, meta = codec.decode(headers, body, "", str(seq))
        extra = codec.original_headers(message, meta.get(codec.H_TOPIC, ""))
        copy = codec.encode(message, core.max_payload, extra, msg_id=f"redrive:{seq}")
        copies.append((core.names.redrive_subject(subscription), copy))
    await core.publish(copies)
    deleted = [await core.api.delete_msg(core.names.dead_stream, seq) for seq, *_ in page]
    return sum(deleted)


async def purge(core: Core, subscription: str) -> int:
    await catalog.load(core.api, core.names, subscription)
    return await core.api.purge_subject(
        core.names.dead_stream, core.names.dead_subject(subscription)
    )


async def delete_namespace(core: Core) -> int:
    """Delete every stream of the namespace (their consumers go with them)."""
    owned = [n for n in await core.api.stream_names() if core.names.owns(n)]
    for name in owned:
        with contextlib.suppress(NotFound):
            await core.api.delete_stream(name)
    return len(owned)


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    text = _NANOS.sub(r"\1", text.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
