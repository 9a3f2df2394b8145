"""Tails of the sqlite broker: a *tap* row per open tail, filled by every publish to its
topic (see :mod:`tidings.brokers.sqlite.schema`), read and emptied by the tail as commits
wake it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from functools import partial

from tidings.brokers.base import Message
from tidings.brokers.sqlite.database import immediate
from tidings.brokers.sqlite.hub import Hub
from tidings.brokers.sqlite.queries import TAP_SECONDS, make_message
from tidings.brokers.tails import QueueTail
from tidings.errors import BrokerError, UnknownTopic

__all__ = ["SqliteTail"]

_PAGE = 500
_REFRESH = TAP_SECONDS / 6
"""How often an idle tail tells publishers it still lives."""


class SqliteTail(QueueTail):
    """A tap of one topic, read whenever the file changes (in this process or another) and
    at least every ``_REFRESH`` seconds. Closing deletes the tap and what it still holds."""

    def __init__(self, hub: Hub, topic: str) -> None:
        super().__init__(topic)
        self._hub = hub
        self._name = f"{uuid.uuid4().hex}"
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        await self._hub.db.run(partial(_open_tap, name=self._name, topic=self.topic))
        self._hub.attach(self)
        self._reader = asyncio.create_task(self._read())

    def wake(self) -> None:
        self._changed.set()

    async def _read(self) -> None:
        seen_at = time.monotonic()
        try:
            while True:
                self._changed.clear()
                refresh = time.monotonic() - seen_at > _REFRESH
                messages = await self._hub.db.run(
                    partial(_take, name=self._name, topic=self.topic, refresh=refresh)
                )
                if refresh or messages:
                    seen_at = time.monotonic()
                for message in messages:
                    self.put(message)
                if len(messages) == _PAGE:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REFRESH):
                        await self._changed.wait()
        except BrokerError as exc:
            self.fail(exc)

    async def _shut(self) -> None:
        self._hub.detach(self)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await self._reader
        with contextlib.suppress(BrokerError):
            await self._hub.db.run(partial(_close_tap, name=self._name))


def _open_tap(conn: sqlite3.Connection, name: str, topic: str) -> None:
    with immediate(conn):
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
            raise UnknownTopic(topic)
        conn.execute(
            "INSERT INTO taps (name, topic, seen_at) VALUES (?, ?, ?)", (name, topic, time.time())
        )


def _take(conn: sqlite3.Connection, name: str, topic: str, refresh: bool) -> list[Message]:
    """The next page of copies, deleted as they are taken. Looks first without the write
    lock, so that a tail woken by its own delete writes nothing; ``refresh`` writes anyway,
    to keep the tap alive (and puts it back if a publisher took it for dead)."""
    rows = conn.execute(
        """SELECT seq, id, event_type, key, body, headers FROM tapped
           WHERE tap = ? ORDER BY seq LIMIT ?""",
        (name, _PAGE),
    ).fetchall()
    if not rows and not refresh:
        return []
    with immediate(conn):
        if rows:
            conn.execute("DELETE FROM tapped WHERE tap = ? AND seq <= ?", (name, rows[-1][0]))
        conn.execute(
            """INSERT INTO taps (name, topic, seen_at) VALUES (?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at""",
            (name, topic, time.time()),
        )
    return [make_message(*row[1:]) for row in rows]


def _close_tap(conn: sqlite3.Connection, name: str) -> None:
    with immediate(conn):
        conn.execute("DELETE FROM tapped WHERE tap = ?", (name,))
        conn.execute("DELETE FROM taps WHERE name = ?", (name,))
