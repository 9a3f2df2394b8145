"""The tables of the sqlite broker, created on first open.

``messages`` holds each published message once; ``deliveries`` holds one row per message and
subscription that accepted it, from publish until it is acknowledged (then the row goes, and
the message with its last row). A delivery's ``state`` is one of:

=========  ============================================================================
ready      may be handed out now
leased     handed to a consumer until ``available_at`` (the lease deadline)
delayed    waiting for a retry delay: ready again at ``available_at``
queued     waiting behind the pending delivery of the same key (the key's *head*)
dead       in the subscription's dead letters, with ``reason`` and failure times
=========  ============================================================================

``taps`` and ``tapped`` serve tails (:meth:`~tidings.brokers.sqlite.SqliteBroker.tail`): a
tap is one open tail of a topic, and ``tapped`` holds a copy of each message published to
the topic since, until the tail has read it. A tail refreshes ``seen_at`` while it lives; a
publish forgets taps not seen for a minute (their process died), with their copies.

Per subscription and non-empty key, at most one delivery is the head (ready, leased or
delayed); the others wait as ``queued``. When the head is acknowledged or dead-lettered, the
queued one with the lowest ``seq`` becomes ready. Claiming is then a walk of the ready rows
in ``seq`` order that never passes over a blocked one.

``attempts`` counts hand-overs; settling a delivery names the attempt it settles, so a
consumer whose lease ran out cannot settle the hand-over that followed. Message ``seq``
never repeats (``AUTOINCREMENT``) for the same reason. Each partial index serves one
question (what is ready, in order; whose lease or delay is over; which dead letters are
oldest; which delivery heads a key; what waits behind it), so a publish writes little more
than the rows and their entry in the ready, head or queued index.
"""

from __future__ import annotations

import sqlite3

from tidings.brokers.sqlite.database import immediate
from tidings.errors import ConfigurationError

__all__ = ["SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION = 2

_DDL = (
    """CREATE TABLE IF NOT EXISTS topics (
        name TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS subscriptions (
        name TEXT PRIMARY KEY,
        topics TEXT NOT NULL,
        event_types TEXT NOT NULL,
        max_attempts INTEGER NOT NULL,
        lease_seconds REAL NOT NULL,
        in_flight INTEGER NOT NULL,
        policy TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        key TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT,
        published_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER NOT NULL,
        subscription TEXT NOT NULL,
        key TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('ready', 'leased', 'delayed', 'queued', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        available_at REAL NOT NULL,
        lease_owner TEXT,
        reason TEXT,
        first_failed_at REAL,
        last_failed_at REAL,
        PRIMARY KEY (seq, subscription)
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS deliveries_ready
        ON deliveries (subscription, seq) WHERE state = 'ready'""",
    """CREATE INDEX IF NOT EXISTS deliveries_leased
        ON deliveries (subscription, available_at) WHERE state = 'leased'""",
    """CREATE INDEX IF NOT EXISTS deliveries_delayed
        ON deliveries (subscription, available_at) WHERE state = 'delayed'""",
    """CREATE INDEX IF NOT EXISTS deliveries_dead
        ON deliveries (subscription, last_failed_at, seq) WHERE state = 'dead'""",
    """CREATE INDEX IF NOT EXISTS deliveries_head
        ON deliveries (subscription, key)
        WHERE state IN ('ready', 'leased', 'delayed') AND key <> ''""",
    """CREATE INDEX IF NOT EXISTS deliveries_queued
        ON deliveries (subscription, key, seq) WHERE state = 'queued'""",
    # version 2
    """CREATE TABLE IF NOT EXISTS taps (
        name TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        seen_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS taps_topic ON taps (topic)""",
    """CREATE TABLE IF NOT EXISTS tapped (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tap TEXT NOT NULL,
        id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        key TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS tapped_tap ON tapped (tap, seq)""",
)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables if missing. Idempotent, and safe when several processes open the
    same new file at once (the check and the creation share one write transaction)."""
    if _version(conn) == SCHEMA_VERSION:
        return
    with immediate(conn):
        version = _version(conn)
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"sqlite broker schema version {version} is newer than this tidings "
                f"understands ({SCHEMA_VERSION}); upgrade tidings"
            )
        if version < SCHEMA_VERSION:
            # Every statement is IF NOT EXISTS: an older file gets what it lacks.
            for statement in _DDL:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])
