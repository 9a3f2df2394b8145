"""What the dashboard reads, shaped as JSON: subscriptions with their depth, controls and
listeners; dead letters; trace records. Everything is read fresh from the broker and the
control store, except the history, which :class:`Operations` samples in the background."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from tidings.brokers import Broker, DeadLetter, Depth
from tidings.control import Controls, ControlStore, ListenerBeat, TraceRecord
from tidings.dashboard.history import History, Sample
from tidings.topology import Subscription

__all__ = ["Operations", "dead_letter_json", "trace_json"]

log = logging.getLogger("tidings.dashboard")

BODY_PREVIEW = 2000
"""Characters of a dead letter's body the dashboard sends (the CLI's ``dlq show`` has it all)."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _depth_json(depth: Depth) -> dict[str, int]:
    return {
        "ready": depth.ready,
        "inFlight": depth.in_flight,
        "delayed": depth.delayed,
        "dead": depth.dead,
        "backlog": depth.pending,
    }


def _listener_json(beat: ListenerBeat) -> dict[str, Any]:
    return {
        "process": beat.process,
        "inFlight": beat.in_flight,
        "settled": beat.settled,
        "perSecond": round(beat.per_second, 3),
        "paused": beat.paused,
        "seenAt": _iso(beat.seen_at),
    }


def dead_letter_json(dead: DeadLetter) -> dict[str, Any]:
    """A dead letter with the start of its body (decoded leniently: it may be no UTF-8)."""
    body = dead.message.body.decode("utf-8", errors="replace")
    return {
        "id": dead.id,
        "messageId": dead.message.id,
        "topic": dead.topic,
        "eventType": dead.message.event_type,
        "key": dead.message.key,
        "correlationId": dead.message.headers.get("correlation-id"),
        "reason": dead.reason,
        "attempts": dead.attempts,
        "firstFailedAt": _iso(dead.first_failed_at),
        "lastFailedAt": _iso(dead.last_failed_at),
        "body": body[:BODY_PREVIEW],
        "bodyTruncated": len(body) > BODY_PREVIEW,
    }


def trace_json(record: TraceRecord) -> dict[str, Any]:
    return {
        "correlationId": record.correlation_id,
        "eventId": record.event_id,
        "eventType": record.event_type,
        "entityId": record.entity_id,
        "outcome": record.outcome,
        "topic": record.topic,
        "subscription": record.subscription,
        "attempt": record.attempt,
        "detail": record.detail,
        "process": record.process,
        "at": _iso(record.at),
    }


def _subscription_json(
    spec: Subscription, depth: Depth, controls: Controls, beats: list[ListenerBeat]
) -> dict[str, Any]:
    return {
        "name": spec.name,
        "topics": list(spec.topics),
        "eventTypes": list(spec.event_types),
        "depth": _depth_json(depth),
        "processedPerSecond": round(sum(b.per_second for b in beats), 3),
        "listeners": [_listener_json(b) for b in beats],
        "paused": controls.paused,
        "controlsUpdatedAt": _iso(controls.updated_at),
        "limits": {
            "inFlight": controls.in_flight or spec.in_flight,
            "inFlightSet": controls.in_flight is not None,
            "rate": controls.rate if controls.rate is not None else spec.rate,
            "rateSet": controls.rate is not None,
            "maxAttempts": spec.max_attempts,
        },
    }


class Operations:
    """The running system as the dashboard sees it: the subscriptions declared in the
    control store, their depth on the broker, the controls in force and the listeners'
    heartbeats, plus a :class:`History` sampled every ``history.interval`` seconds by
    :meth:`sample_forever`."""

    def __init__(self, broker: Broker, store: ControlStore, history: History) -> None:
        self.broker = broker
        self.store = store
        self.history = history

    async def subscription(self, name: str) -> Subscription | None:
        return await self.store.subscription(name)

    async def overview(self) -> dict[str, Any]:
        """``{"generatedAt", "topics": [{"name", "subscriptions"}], "subscriptions": [...]}``."""
        specs = await self.store.subscriptions()
        controls = await self.store.all_controls()
        beats = await self.store.listeners()
        depths = await asyncio.gather(*(self.broker.depth(s.name) for s in specs))
        subscriptions = [
            _subscription_json(
                spec,
                depth,
                controls.get(spec.name, Controls(spec.name)),
                [b for b in beats if b.subscription == spec.name],
            )
            for spec, depth in zip(specs, depths, strict=True)
        ]
        topics: dict[str, list[str]] = {}
        for spec in specs:
            for topic in spec.topics:
                topics.setdefault(topic, []).append(spec.name)
        return {
            "generatedAt": datetime.now(UTC).isoformat(),
            "topics": [{"name": t, "subscriptions": s} for t, s in sorted(topics.items())],
            "subscriptions": subscriptions,
        }

    async def sample(self) -> None:
        """Add one point per declared subscription to the history."""
        now = datetime.now(UTC)
        specs = await self.store.subscriptions()
        beats = await self.store.listeners()
        depths = await asyncio.gather(*(self.broker.depth(s.name) for s in specs))
        self.history.add(
            {
                spec.name: Sample(
                    at=now,
                    throughput=sum(b.per_second for b in beats if b.subscription == spec.name),
                    backlog=depth.pending,
                    dead=depth.dead,
                )
                for spec, depth in zip(specs, depths, strict=True)
            }
        )

    async def sample_forever(self) -> None:
        """Sample until cancelled; a failed sample is logged and leaves a gap."""
        while True:
            try:
                await self.sample()
            except Exception:  # noqa: BLE001 - the next sample may succeed
                log.warning("could not sample the subscriptions", exc_info=True)
            await asyncio.sleep(self.history.interval)
