"""The broker's other transactions: declare, depth, dead letters, redrive and purge."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from tidings.brokers.base import DeadLetter, Depth
from tidings.brokers.sqlite.database import immediate
from tidings.brokers.sqlite.queries import drop_orphans, has_head, load_policy, make_message
from tidings.topology import Topology

__all__ = ["dead_letters", "declare", "depth", "purge", "redrive"]


def declare(conn: sqlite3.Connection, topology: Topology) -> None:
    now = time.time()
    with immediate(conn):
        conn.executemany(
            "INSERT INTO topics (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            [(t.name, now) for t in topology.topics],
        )
        conn.executemany(
            """INSERT INTO subscriptions (name, topics, event_types, max_attempts,
                   lease_seconds, in_flight, policy, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET
                   topics = excluded.topics, event_types = excluded.event_types,
                   max_attempts = excluded.max_attempts,
                   lease_seconds = excluded.lease_seconds, in_flight = excluded.in_flight,
                   policy = excluded.policy, updated_at = excluded.updated_at""",
            [
                (
                    s.name,
                    json.dumps(list(s.topics)),
                    json.dumps(list(s.event_types)),
                    s.max_attempts,
                    s.lease_seconds,
                    s.in_flight,
                    s.model_dump_json(),
                    now,
                    now,
                )
                for s in topology.subscriptions
            ],
        )


def depth(conn: sqlite3.Connection, subscription: str) -> Depth:
    """Counts by state; a lapsed lease or delay counts as ready, and so does a delivery
    queued behind an earlier one of its key."""
    load_policy(conn, subscription)
    counts = conn.execute(
        """SELECT
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'ready'),
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'queued'),
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'leased'),
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'leased'
                AND available_at <= :now),
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'delayed'),
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'delayed'
                AND available_at <= :now),
             (SELECT COUNT(*) FROM deliveries WHERE subscription = :sub AND state = 'dead')""",
        {"sub": subscription, "now": time.time()},
    ).fetchone()
    ready, queued, leased, lapsed, delayed, due, dead = counts
    return Depth(
        ready=ready + queued + lapsed + due,
        in_flight=leased - lapsed,
        delayed=delayed - due,
        dead=dead,
    )


def dead_letters(conn: sqlite3.Connection, subscription: str, limit: int) -> list[DeadLetter]:
    """Oldest first: by when they failed for the last time, then by publish order."""
    load_policy(conn, subscription)
    rows = conn.execute(
        """SELECT d.seq, m.topic, m.id, m.event_type, m.key, m.body, m.headers,
                  d.reason, d.attempts, d.first_failed_at, d.last_failed_at
           FROM deliveries d JOIN messages m ON m.seq = d.seq
           WHERE d.subscription = ? AND d.state = 'dead'
           ORDER BY d.last_failed_at, d.seq LIMIT ?""",
        (subscription, max(0, limit)),
    )
    return [
        DeadLetter(
            id=str(seq),
            subscription=subscription,
            topic=topic,
            message=make_message(mid, event_type, key, body, headers),
            reason=reason or "",
            attempts=attempts,
            first_failed_at=_datetime(first) if first is not None else None,
            last_failed_at=_datetime(last),
        )
        for seq, topic, mid, event_type, key, body, headers, reason, attempts, first, last in rows
    ]


def redrive(conn: sqlite3.Connection, subscription: str, ids: Sequence[str] | None) -> int:
    """Make dead letters pending again with no attempts counted. They keep their place in
    publish order; one whose key is held by a pending delivery queues behind it."""
    chosen = "" if ids is None else "AND seq IN (SELECT value FROM json_each(:ids))"
    seqs = [] if ids is None else [int(i) for i in ids if i.isdigit()]
    with immediate(conn):
        load_policy(conn, subscription)
        now = time.time()
        rows = conn.execute(
            f"""SELECT seq, key FROM deliveries
                WHERE subscription = :sub AND state = 'dead' {chosen} ORDER BY seq""",
            {"sub": subscription, "ids": json.dumps(seqs)},
        ).fetchall()
        for seq, key in rows:
            state = "queued" if key and has_head(conn, subscription, key) else "ready"
            conn.execute(
                """UPDATE deliveries
                   SET state = ?, attempts = 0, available_at = ?, lease_owner = NULL,
                       reason = NULL, first_failed_at = NULL, last_failed_at = NULL
                   WHERE seq = ? AND subscription = ?""",
                (state, now, seq, subscription),
            )
        return len(rows)


def purge(conn: sqlite3.Connection, subscription: str) -> int:
    """Delete the dead letters of ``subscription``, and their messages if no other
    subscription still refers to them."""
    with immediate(conn):
        load_policy(conn, subscription)
        gone = conn.execute(
            "DELETE FROM deliveries WHERE subscription = ? AND state = 'dead' RETURNING seq",
            (subscription,),
        ).fetchall()
        drop_orphans(conn, {seq for (seq,) in gone})
        return len(gone)


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
