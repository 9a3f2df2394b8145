"""The :class:`SqliteBroker`: the broker protocol over one shared SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial

from tidings.brokers.base import (
    Capabilities,
    ClosesOnExit,
    Consumer,
    DeadLetter,
    Depth,
    Message,
    Tail,
)
from tidings.brokers.sqlite import admin, queries
from tidings.brokers.sqlite.consumer import SqliteConsumer
from tidings.brokers.sqlite.database import Database
from tidings.brokers.sqlite.hub import Hub
from tidings.brokers.sqlite.schema import ensure_schema
from tidings.brokers.sqlite.tail import SqliteTail
from tidings.brokers.sqlite.url import SqliteOptions, Synchronous, parse_url
from tidings.errors import ConfigurationError
from tidings.topology import Topology

__all__ = ["CAPABILITIES", "SqliteBroker"]

CAPABILITIES = Capabilities(per_key_order=True, leases=True, durable=True, multi_process=True)


class SqliteBroker(ClosesOnExit):
    """A :class:`~tidings.brokers.base.Broker` kept in one SQLite database file (WAL mode)
    that any number of processes on one machine open at once.

    Open it with :meth:`open` (or :func:`tidings.brokers.connect`). See
    :mod:`tidings.brokers.sqlite` for what it promises.
    """

    def __init__(self, hub: Hub, options: SqliteOptions) -> None:
        self._hub = hub
        self.options = options

    @classmethod
    async def open(cls, url: str) -> SqliteBroker:
        """Open the broker file that ``url`` names, creating it, its folder and its tables
        if missing. Raises :class:`ConfigurationError` for a bad URL or an unusable file."""
        options = parse_url(url)
        try:
            options.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"sqlite broker {options.path}: cannot create its folder: {exc.strerror or exc}"
            ) from None
        db = Database(options.path, partial(_setup, synchronous=options.synchronous))
        await db.open()
        return cls(Hub(db), options)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def declare(self, topology: Topology) -> None:
        await self._hub.db.run(partial(admin.declare, topology=topology))

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        stored = await self._hub.db.run(
            partial(queries.publish, topic=topic, messages=list(messages))
        )
        if stored:
            self._hub.notify()

    def consume(self, subscription: str, *, prefetch: int | None = None) -> Consumer:
        return SqliteConsumer(self._hub, subscription, prefetch)

    async def depth(self, subscription: str) -> Depth:
        return await self._hub.db.run(partial(admin.depth, subscription=subscription))

    async def dead_letters(self, subscription: str, *, limit: int = 100) -> list[DeadLetter]:
        return await self._hub.db.run(
            partial(admin.dead_letters, subscription=subscription, limit=limit)
        )

    async def redrive(self, subscription: str, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else list(ids)
        moved = await self._hub.db.run(
            partial(admin.redrive, subscription=subscription, ids=wanted)
        )
        if moved:
            self._hub.notify()
        return moved

    async def purge(self, subscription: str) -> int:
        return await self._hub.db.run(partial(admin.purge, subscription=subscription))

    async def deliver(self, subscription: str, messages: Sequence[Message], *, topic: str) -> int:
        """Insert the messages into ``subscription``'s queue alone, the way :meth:`publish`
        would for it: each queues behind a pending delivery of its key."""
        stored = await self._hub.db.run(
            partial(
                queries.deliver, subscription=subscription, topic=topic, messages=list(messages)
            )
        )
        if stored:
            self._hub.notify()
        return int(stored)

    def tail(self, topic: str) -> Tail:
        """A tap on ``topic``: every publish to it, from any process, copies its messages
        for this tail until it closes (see :mod:`tidings.brokers.sqlite.schema`)."""
        return SqliteTail(self._hub, topic)

    async def close(self) -> None:
        """Close every consumer and tail of this broker object (unsettled deliveries come
        back at once), commit pending settlements and close the file. Idempotent."""
        await self._hub.close()

    def __repr__(self) -> str:
        state = " closed" if self._hub.closed else ""
        return f"<SqliteBroker {self.options.path} synchronous={self.options.synchronous}{state}>"


def _setup(conn: sqlite3.Connection, synchronous: Synchronous) -> None:
    mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
    if mode.lower() != "wal":
        raise ConfigurationError(
            f"sqlite broker: the file cannot use write-ahead logging (journal_mode={mode})"
        )
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA journal_size_limit = 67108864")
    conn.execute("PRAGMA cache_size = -16384")
    ensure_schema(conn)
