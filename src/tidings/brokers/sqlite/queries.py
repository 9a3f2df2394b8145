"""The broker's transactions on the message flow: publish, claim, settle and release.

Each function is one unit of work on the writer thread. They read the clock themselves,
after taking the write lock, so that time stamps follow commit order across processes.
Times are seconds since the epoch (``time.time()``): the only clock that processes on one
machine share.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from tidings.brokers.base import Message
from tidings.brokers.sqlite.database import immediate
from tidings.errors import UnknownSubscription, UnknownTopic

__all__ = [
    "Claim",
    "Claimed",
    "Policy",
    "Settlement",
    "claim",
    "deliver",
    "has_head",
    "load_policy",
    "make_message",
    "promote",
    "publish",
    "release",
    "settle",
    "tap",
]


@dataclass(frozen=True, slots=True)
class Policy:
    """The parts of a subscription's policy the broker applies, as last declared."""

    max_attempts: int
    lease_seconds: float
    in_flight: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery leased to a consumer."""

    seq: int
    attempt: int
    topic: str
    message: Message
    lease_until: float


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim took, and when the subscription next needs a look even if nothing is
    committed meanwhile (a retry delay or a lease running out)."""

    claimed: list[Claimed]
    next_due: float | None
    policy: Policy


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one consumer settles (or hands back unseen) the hand-over ``attempt`` of message
    ``seq``. ``unclaim`` returns a delivery the application never saw, uncounted."""

    kind: Literal["ack", "retry", "dead", "unclaim"]
    subscription: str
    seq: int
    attempt: int
    key: str
    delay: float = 0.0
    reason: str = ""


def load_policy(conn: sqlite3.Connection, subscription: str) -> Policy:
    row = conn.execute(
        "SELECT max_attempts, lease_seconds, in_flight FROM subscriptions WHERE name = ?",
        (subscription,),
    ).fetchone()
    if row is None:
        raise UnknownSubscription(subscription)
    return Policy(max_attempts=row[0], lease_seconds=row[1], in_flight=row[2])


def has_head(conn: sqlite3.Connection, subscription: str, key: str) -> bool:
    """True when a delivery of ``key`` is pending (ready, leased or delayed) and so holds
    the key."""
    row = conn.execute(
        """SELECT 1 FROM deliveries
           WHERE subscription = ? AND key = ? AND key <> ''
             AND state IN ('ready', 'leased', 'delayed') LIMIT 1""",
        (subscription, key),
    ).fetchone()
    return row is not None


def promote(conn: sqlite3.Connection, subscription: str, key: str, now: float) -> None:
    """If nothing holds ``key`` any more, make its oldest queued delivery ready."""
    if not key or has_head(conn, subscription, key):
        return
    conn.execute(
        """UPDATE deliveries SET state = 'ready', available_at = :now
           WHERE subscription = :sub AND state = 'queued' AND seq = (
               SELECT seq FROM deliveries
               WHERE subscription = :sub AND key = :key AND state = 'queued'
               ORDER BY seq LIMIT 1)""",
        {"sub": subscription, "key": key, "now": now},
    )


def publish(conn: sqlite3.Connection, topic: str, messages: Sequence[Message]) -> int:
    """Store ``messages`` with one delivery per accepting subscription, and a copy for each
    open tail of ``topic``; returns how many deliveries and copies were made. A message no
    subscription accepts is not stored."""
    with immediate(conn):
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
            raise UnknownTopic(topic)
        routes = [
            (name, frozenset(json.loads(types)))
            for name, types in conn.execute(
                """SELECT name, event_types FROM subscriptions
                   WHERE EXISTS (SELECT 1 FROM json_each(topics) WHERE value = ?)""",
                (topic,),
            )
        ]
        now = time.time()
        copies = tap(conn, topic, messages, now)
        fan_out = [
            (message, [n for n, types in routes if not types or message.event_type in types])
            for message in messages
        ]
        return copies + _store(conn, topic, fan_out, now)


def deliver(
    conn: sqlite3.Connection, subscription: str, topic: str, messages: Sequence[Message]
) -> int:
    """Store the ``messages`` that ``subscription`` accepts from ``topic`` with a delivery
    to it alone; returns how many."""
    with immediate(conn):
        row = conn.execute(
            "SELECT topics, event_types FROM subscriptions WHERE name = ?", (subscription,)
        ).fetchone()
        if row is None:
            raise UnknownSubscription(subscription)
        topics, types = frozenset(json.loads(row[0])), frozenset(json.loads(row[1]))
        if topic not in topics:
            return 0
        chosen = [m for m in messages if not types or m.event_type in types]
        return _store(conn, topic, [(m, [subscription]) for m in chosen], time.time())


def _store(
    conn: sqlite3.Connection,
    topic: str,
    fan_out: Sequence[tuple[Message, list[str]]],
    now: float,
) -> int:
    """Insert each message that goes to any subscription, and its deliveries (queued behind
    a pending delivery of its key); returns how many deliveries."""
    rows: list[tuple[str, str, str, str, bytes, str | None, float]] = []
    routed: list[tuple[str, list[str]]] = []
    for message, names in fan_out:
        if not names:
            continue
        headers = json.dumps(dict(message.headers)) if message.headers else None
        rows.append(
            (topic, message.id, message.event_type, message.key, bytes(message.body),
             headers, now)
        )  # fmt: skip
        routed.append((message.key, names))
    if not rows:
        return 0
    before = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
    base = (before.fetchone() or (0,))[0]
    conn.executemany(
        """INSERT INTO messages (topic, id, event_type, key, body, headers, published_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )
    new = conn.execute("SELECT seq FROM messages WHERE seq > ? ORDER BY seq", (base,))
    seqs = [s for (s,) in new]
    held: set[tuple[str, str]] = set()
    deliveries: list[tuple[int, str, str, str, float]] = []
    for seq, (key, names) in zip(seqs, routed, strict=True):
        for name in names:
            state = "ready"
            if key:
                if (name, key) in held or has_head(conn, name, key):
                    state = "queued"
                held.add((name, key))
            deliveries.append((seq, name, key, state, now))
    conn.executemany(
        """INSERT INTO deliveries (seq, subscription, key, state, attempts, available_at)
           VALUES (?, ?, ?, ?, 0, ?)""",
        deliveries,
    )
    return len(deliveries)


TAP_SECONDS = 60.0
"""A tap not refreshed for this long belongs to a tail whose process is gone."""


def tap(conn: sqlite3.Connection, topic: str, messages: Sequence[Message], now: float) -> int:
    """Copy ``messages`` for every live tap of ``topic``, forgetting dead taps; returns how
    many copies. Part of the caller's transaction."""
    taps = conn.execute("SELECT name, seen_at FROM taps WHERE topic = ?", (topic,)).fetchall()
    if not taps:
        return 0
    dead = [(name,) for name, seen_at in taps if seen_at < now - TAP_SECONDS]
    if dead:
        conn.executemany("DELETE FROM tapped WHERE tap = ?", dead)
        conn.executemany("DELETE FROM taps WHERE name = ?", dead)
    live = [name for name, seen_at in taps if seen_at >= now - TAP_SECONDS]
    copies = [
        (name, m.id, m.event_type, m.key, bytes(m.body),
         json.dumps(dict(m.headers)) if m.headers else None)
        for m in messages
        for name in live
    ]  # fmt: skip
    conn.executemany(
        """INSERT INTO tapped (tap, id, event_type, key, body, headers)
           VALUES (?, ?, ?, ?, ?, ?)""",
        copies,
    )
    return len(copies)


_CLAIMABLE = """
    SELECT EXISTS (SELECT 1 FROM deliveries WHERE subscription = :sub AND state = 'ready')
        OR EXISTS (SELECT 1 FROM deliveries WHERE subscription = :sub AND state = 'leased'
                   AND available_at <= :now)
        OR EXISTS (SELECT 1 FROM deliveries WHERE subscription = :sub AND state = 'delayed'
                   AND available_at <= :now)"""

_NEXT_DUE = """
    SELECT MIN(t) FROM (
        SELECT MIN(available_at) AS t FROM deliveries
        WHERE subscription = :sub AND state = 'leased'
        UNION ALL
        SELECT MIN(available_at) FROM deliveries
        WHERE subscription = :sub AND state = 'delayed')"""


def claim(conn: sqlite3.Connection, subscription: str, owner: str, limit: int) -> Claim:
    """Lease up to ``limit`` ready deliveries to ``owner``, in publish order.

    Looks first, without the write lock, whether anything is claimable. Deliveries whose
    lease ran out come back first, or go to the dead letters when they already had every
    attempt; delayed ones whose time came become ready.
    """
    policy = load_policy(conn, subscription)
    args: dict[str, object] = {"sub": subscription, "now": time.time()}
    if not conn.execute(_CLAIMABLE, args).fetchone()[0]:
        return Claim([], conn.execute(_NEXT_DUE, args).fetchone()[0], policy)
    with immediate(conn):
        now = time.time()
        args = {"sub": subscription, "now": now}
        _expire_leases(conn, subscription, policy, now)
        conn.execute(
            """UPDATE deliveries SET state = 'ready'
               WHERE subscription = :sub AND state = 'delayed' AND available_at <= :now""",
            args,
        )
        lease_until = now + policy.lease_seconds
        taken = conn.execute(
            """UPDATE deliveries
               SET state = 'leased', attempts = attempts + 1, lease_owner = :owner,
                   available_at = :until
               WHERE subscription = :sub AND seq IN (
                   SELECT seq FROM deliveries WHERE subscription = :sub AND state = 'ready'
                   ORDER BY seq LIMIT :limit)
               RETURNING seq, attempts""",
            {**args, "owner": owner, "until": lease_until, "limit": limit},
        ).fetchall()
        attempts = dict(taken)
        claimed = [
            Claimed(seq, attempts[seq], topic, make_message(*rest), lease_until)
            for seq, topic, *rest in conn.execute(
                """SELECT seq, topic, id, event_type, key, body, headers FROM messages
                   WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq""",
                (json.dumps(sorted(attempts)),),
            )
        ]
        next_due = conn.execute(_NEXT_DUE, args).fetchone()[0]
    return Claim(claimed, next_due, policy)


def _expire_leases(conn: sqlite3.Connection, subscription: str, policy: Policy, now: float) -> None:
    args = {"sub": subscription, "now": now, "max": policy.max_attempts}
    buried = conn.execute(
        """UPDATE deliveries
           SET state = 'dead', lease_owner = NULL,
               reason = 'no settlement after ' || attempts || ' attempts (lease of '
                        || :lease || 's expired)',
               first_failed_at = COALESCE(first_failed_at, available_at),
               last_failed_at = available_at
           WHERE subscription = :sub AND state = 'leased' AND available_at <= :now
             AND attempts >= :max
           RETURNING key""",
        {**args, "lease": f"{policy.lease_seconds:g}"},
    ).fetchall()
    conn.execute(
        """UPDATE deliveries
           SET state = 'ready', lease_owner = NULL, reason = 'lease expired',
               first_failed_at = COALESCE(first_failed_at, available_at),
               last_failed_at = available_at
           WHERE subscription = :sub AND state = 'leased' AND available_at <= :now""",
        args,
    )
    for key in {k for (k,) in buried if k}:
        promote(conn, subscription, key, now)


def settle(conn: sqlite3.Connection, settlements: Iterable[Settlement]) -> None:
    """Apply many settlements in one transaction. One whose hand-over is no longer current
    (its lease ran out and it was handed out again, or it is dead) changes nothing."""
    by_kind: dict[str, list[Settlement]] = {"ack": [], "retry": [], "dead": [], "unclaim": []}
    for s in settlements:
        by_kind[s.kind].append(s)
    with immediate(conn):
        now = time.time()
        conn.executemany(
            """DELETE FROM deliveries
               WHERE seq = ? AND subscription = ? AND attempts = ?
                 AND state IN ('leased', 'ready')""",
            [(s.seq, s.subscription, s.attempt) for s in by_kind["ack"]],
        )
        conn.executemany(
            """UPDATE deliveries
               SET state = CASE
                       WHEN attempts >= (SELECT max_attempts FROM subscriptions
                                         WHERE name = deliveries.subscription) THEN 'dead'
                       WHEN :delay > 0 THEN 'delayed' ELSE 'ready' END,
                   available_at = :now + :delay, lease_owner = NULL, reason = :reason,
                   first_failed_at = COALESCE(first_failed_at, :now), last_failed_at = :now
               WHERE seq = :seq AND subscription = :sub AND attempts = :attempt
                 AND state IN ('leased', 'ready')""",
            [
                {"seq": s.seq, "sub": s.subscription, "attempt": s.attempt, "now": now,
                 "delay": max(0.0, s.delay), "reason": s.reason}
                for s in by_kind["retry"]
            ],
        )  # fmt: skip
        conn.executemany(
            """UPDATE deliveries
               SET state = 'dead', lease_owner = NULL, reason = ?,
                   first_failed_at = COALESCE(first_failed_at, ?), last_failed_at = ?
               WHERE seq = ? AND subscription = ? AND attempts = ?
                 AND state IN ('leased', 'ready')""",
            [(s.reason, now, now, s.seq, s.subscription, s.attempt) for s in by_kind["dead"]],
        )
        conn.executemany(
            """UPDATE deliveries
               SET state = 'ready', attempts = attempts - 1, lease_owner = NULL,
                   available_at = ?
               WHERE seq = ? AND subscription = ? AND attempts = ? AND state = 'leased'""",
            [(now, s.seq, s.subscription, s.attempt) for s in by_kind["unclaim"]],
        )
        released = by_kind["ack"] + by_kind["retry"] + by_kind["dead"]
        for subscription, key in {(s.subscription, s.key) for s in released if s.key}:
            promote(conn, subscription, key, now)
        drop_orphans(conn, {s.seq for s in by_kind["ack"]})


def release(
    conn: sqlite3.Connection,
    subscription: str,
    handed: Sequence[tuple[int, int]],
    unseen: Sequence[tuple[int, int]],
) -> None:
    """Give back a closing consumer's unsettled deliveries, ready at once. ``handed`` ones
    (``(seq, attempt)``) keep their attempt and go to the dead letters if it was the last;
    ``unseen`` ones were never handed to the application and do not count."""
    with immediate(conn):
        now = time.time()
        max_attempts = load_policy(conn, subscription).max_attempts
        buried: set[str] = set()
        for seq, attempt in handed:
            row = conn.execute(
                """UPDATE deliveries
                   SET state = CASE WHEN attempts >= :max THEN 'dead' ELSE 'ready' END,
                       reason = CASE WHEN attempts >= :max
                           THEN 'no settlement after ' || attempts
                                || ' attempts (consumer closed)'
                           ELSE 'consumer closed' END,
                       first_failed_at = COALESCE(first_failed_at, :now),
                       last_failed_at = :now, lease_owner = NULL, available_at = :now
                   WHERE seq = :seq AND subscription = :sub AND attempts = :attempt
                     AND state = 'leased'
                   RETURNING state, key""",
                {"max": max_attempts, "now": now, "seq": seq, "sub": subscription,
                 "attempt": attempt},
            ).fetchone()  # fmt: skip
            if row is not None and row[0] == "dead" and row[1]:
                buried.add(row[1])
        conn.executemany(
            """UPDATE deliveries
               SET state = 'ready', attempts = attempts - 1, lease_owner = NULL,
                   available_at = ?
               WHERE seq = ? AND subscription = ? AND attempts = ? AND state = 'leased'""",
            [(now, seq, subscription, a) for seq, a in unseen],
        )
        for key in buried:
            promote(conn, subscription, key, now)


def drop_orphans(conn: sqlite3.Connection, seqs: Iterable[int]) -> None:
    """Delete the messages among ``seqs`` that no delivery refers to any more."""
    conn.executemany(
        """DELETE FROM messages
           WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?1)""",
        [(seq,) for seq in seqs],
    )


def make_message(mid: str, event_type: str, key: str, body: bytes, headers: str | None) -> Message:
    return Message(
        id=mid,
        event_type=event_type,
        key=key,
        body=body,
        headers=json.loads(headers) if headers else {},
    )
