"""How a :class:`Message` travels as an AMQP message, and what the broker writes beside it.

* ``Message.id`` is the AMQP ``message_id``; ``event_type`` is the AMQP ``type`` and the
  routing key; ``body`` is the body, byte for byte; ``headers`` are AMQP headers, as strings;
  ``key`` is the header ``x-tidings-key`` (absent when empty). Every message is persistent.
* The broker's own bookkeeping travels in headers named ``x-tidings-*``: the attempts made
  before a copy was republished, its due time, its topic, and, in dead letters, the reason,
  attempt count, failure times and dead-letter id. Headers that RabbitMQ adds
  (``x-delivery-count``, ``x-death``, ``x-first-death-*``, ``x-last-death-*``) are read and
  dropped. A message's own headers cannot use these names: :func:`properties` refuses them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from tidings.brokers.base import DeadLetter, Message
from tidings.brokers.rabbitmq.names import Names

__all__ = [
    "DEAD_ID",
    "Incoming",
    "copy_properties",
    "dead_letter_of",
    "decode",
    "now_us",
    "properties",
]

KEY = "x-tidings-key"
TOPIC = "x-tidings-topic"
ATTEMPT = "x-tidings-attempt"
"""Deliveries to the subscription before this copy was made."""
DUE = "x-tidings-due"
"""When a delayed retry is due, in microseconds since the epoch."""
FIRST_FAILED = "x-tidings-first-failed-at"
LAST_FAILED = "x-tidings-last-failed-at"
REASON = "x-tidings-reason"
ATTEMPTS = "x-tidings-attempts"
DEAD_ID = "x-tidings-dead-id"

_OURS = "x-tidings-"
_RABBIT = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


def now_us() -> int:
    return time.time_ns() // 1000


def _reserved(name: str) -> bool:
    return name.startswith(_OURS) or name in _RABBIT


def properties(message: Message, *, topic: str | None = None) -> Basic.Properties:
    """AMQP properties of ``message`` as first published (``topic`` in a header when it goes
    straight to a queue rather than through its topic's exchange). Raises
    :class:`ValueError` for a header name the broker reserves."""
    headers: dict[str, Any] = dict(message.headers)
    for name in headers:
        if _reserved(name):
            raise ValueError(f"message {message.id!r}: header {name!r} is reserved by the broker")
    if message.key:
        headers[KEY] = message.key
    if topic is not None:
        headers[TOPIC] = topic
    return Basic.Properties(
        message_id=message.id,
        message_type=message.event_type,
        delivery_mode=2,
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message as received from a subscription queue, with the broker's bookkeeping."""

    message: Message
    topic: str
    prior: int
    """Deliveries to this subscription before this copy was made (explicit retries)."""
    returns: int
    """Times this copy came back unsettled: ``x-delivery-count`` on quorum queues; on
    classic queues only whether it came back at all (the ``redelivered`` flag)."""
    due_us: int | None
    first_failed_us: int | None

    @property
    def attempt(self) -> int:
        return self.prior + self.returns + 1


def decode(delivered: DeliveredMessage, names: Names) -> Incoming:
    props = delivered.header.properties
    raw: Mapping[str, Any] = props.headers or {}
    headers = {name: _text(value) for name, value in raw.items() if not _reserved(name)}
    topic = raw.get(TOPIC)
    returns = raw.get("x-delivery-count")
    if not isinstance(returns, int):
        returns = 1 if getattr(delivered.delivery, "redelivered", False) else 0
    message = Message(
        id=props.message_id or "",
        event_type=props.message_type or (delivered.routing_key or ""),
        key=_text(raw.get(KEY, "")),
        body=delivered.body,
        headers=headers,
    )
    return Incoming(
        message=message,
        topic=_text(topic) if topic is not None else names.topic_of(delivered.exchange or ""),
        prior=_int(raw.get(ATTEMPT)) or 0,
        returns=returns,
        due_us=_int(raw.get(DUE)),
        first_failed_us=_int(raw.get(FIRST_FAILED)),
    )


def copy_properties(incoming: Incoming, extra: Mapping[str, Any]) -> Basic.Properties:
    """Properties of a copy of ``incoming`` that the broker republishes (a retry, a hop, a
    dead letter, a redrive): the message's own fields and ``extra`` bookkeeping."""
    message = incoming.message
    headers: dict[str, Any] = dict(message.headers)
    if message.key:
        headers[KEY] = message.key
    headers[TOPIC] = incoming.topic
    headers.update(extra)
    return Basic.Properties(
        message_id=message.id,
        message_type=message.event_type,
        delivery_mode=2,
        headers=headers,
    )


def dead_letter_of(delivered: DeliveredMessage, subscription: str, names: Names) -> DeadLetter:
    """The :class:`DeadLetter` a message of a dead-letter queue stands for."""
    incoming = decode(delivered, names)
    raw: Mapping[str, Any] = delivered.header.properties.headers or {}
    last = _int(raw.get(LAST_FAILED)) or 0
    return DeadLetter(
        id=_text(raw.get(DEAD_ID, "")),
        subscription=subscription,
        topic=incoming.topic,
        message=incoming.message,
        reason=_text(raw.get(REASON, "")),
        attempts=_int(raw.get(ATTEMPTS)) or 0,
        first_failed_at=_datetime(incoming.first_failed_us),
        last_failed_at=_datetime(last) or datetime.fromtimestamp(0, UTC),
    )


def _datetime(us: int | None) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, UTC)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
