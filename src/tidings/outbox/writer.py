"""Write events through the caller's session, so they commit or roll back with the change.

With OpenTelemetry, each write is a PRODUCER span and the message carries its W3C
``traceparent`` header, so listeners continue the writer's trace (see :mod:`tidings.tracing`).

On PostgreSQL each insert also notifies the relays of its schema, at commit (see
:mod:`tidings.outbox.postgres`), so relays in other processes publish at once too.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import event as sa_event
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tidings import tracing
from tidings.errors import ConfigurationError, EventTooLarge
from tidings.events import Event
from tidings.events.codecs import MAX_EVENT_BYTES, Codec, get_codec
from tidings.events.model import utc_now
from tidings.outbox.postgres import notification
from tidings.outbox.table import outbox_table

__all__ = ["Outbox"]

MAX_EVENT_BYTES_ENV = "TIDINGS_MAX_EVENT_BYTES"
_PENDING_KEY = "tidings.outbox.pending"


class Outbox:
    """The writing side of the outbox.

    :meth:`add` inserts the encoded event in the session's open transaction, or refuses it
    when it is larger than ``max_event_bytes``: by default ``TIDINGS_MAX_EVENT_BYTES`` from
    the environment, else 256 KiB (what listeners decode by default). When that
    transaction commits, :attr:`committed` is set so that a relay in the same process
    publishes at once instead of at its next poll; if it rolls back, the event is gone with
    the change, as it should be.
    """

    def __init__(
        self, *, codec: str | Codec = "cloudevents", max_event_bytes: int | None = None
    ) -> None:
        self.codec = get_codec(codec) if isinstance(codec, str) else codec
        self.max_event_bytes = _max_event_bytes() if max_event_bytes is None else max_event_bytes
        if self.max_event_bytes < 1:
            raise ConfigurationError("max_event_bytes must be at least 1")
        self.committed = asyncio.Event()

    async def add(self, session: AsyncSession, topic: str, event: Event) -> None:
        """Stage ``event`` for ``topic`` in ``session``'s transaction. Raises
        :class:`~tidings.errors.EventTooLarge` before writing anything when the encoded event
        exceeds ``max_event_bytes``; the caller's transaction should then roll back, so that
        neither the change nor any event of it is kept."""
        body = self.codec.encode(event)
        if len(body) > self.max_event_bytes:
            raise EventTooLarge(len(body), self.max_event_bytes)
        with tracing.publishing(topic, event) as trace_headers:
            row = {
                "event_id": str(event.id),
                "topic": topic,
                "event_type": event.event_type,
                "entity_id": event.entity_id,
                "entity_version": event.entity_version,
                "correlation_id": event.correlation_id,
                "body": body,
                "headers": {
                    "content-type": self.codec.content_type,
                    "correlation-id": event.correlation_id,
                    **trace_headers,
                },
                "created_at": utc_now(),
            }
            postgresql = session.get_bind().dialect.name == "postgresql"
            await session.execute(_INSERT_NOTIFYING if postgresql else _INSERT, row)
        info = session.sync_session.info
        info.setdefault(_PENDING_KEY, set()).add(self)


_INSERT = insert(outbox_table)
_INSERT_NOTIFYING = insert(outbox_table).returning(notification())


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """Wake the relays of the outboxes written to in the transaction that committed. One
    listener for every session of the process: a listener per session costs more than the
    insert it follows."""
    for outbox in session.info.pop(_PENDING_KEY, ()):
        outbox.committed.set()


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _max_event_bytes() -> int:
    text = os.environ.get(MAX_EVENT_BYTES_ENV, "").strip()
    if not text:
        return MAX_EVENT_BYTES
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigurationError(f"{MAX_EVENT_BYTES_ENV} must be a whole number of bytes >= 1")
    return int(text)
