"""The control database's tables: what operators set and what the running system reports.

They live in one database per deployment (see :meth:`tidings.config.Settings.
control_database_url`), apart from every domain's own, and are migrated by their own tree
(``tidings.control:_migrations``).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

__all__ = ["controls_table", "listeners_table", "metadata", "subscriptions_table", "trace_table"]

metadata = MetaData(
    info={
        "migrations": "tidings.control:_migrations",
        "version_table": "tidings_control_alembic_version",
    }
)

_SEQ = BigInteger().with_variant(Integer(), "sqlite")

subscriptions_table = Table(
    "tidings_subscriptions",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("declared_at", DateTime(timezone=True), nullable=False),
)
"""Every subscription declared through tidings, with its policies (the last declaration)."""

controls_table = Table(
    "tidings_controls",
    metadata,
    Column("subscription", String(200), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("in_flight", Integer, nullable=True),
    Column("rate", Float, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""What an operator set on a subscription; running listeners follow it within a second."""

listeners_table = Table(
    "tidings_listeners",
    metadata,
    Column("subscription", String(200), primary_key=True),
    Column("process", String(200), primary_key=True),
    Column("in_flight", Integer, nullable=False),
    Column("settled", BigInteger, nullable=False),
    Column("per_second", Float, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)
"""One row per running listener process, refreshed every second (a heartbeat)."""

trace_table = Table(
    "tidings_trace",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("correlation_id", String(200), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("topic", String(100), nullable=True),
    Column("subscription", String(200), nullable=True),
    Column("outcome", String(30), nullable=False),
    Column("attempt", Integer, nullable=True),
    Column("detail", String(1000), nullable=True),
    Column("process", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)
"""What happened to each event, where and when: published by a relay, then settled by each
subscription's listener (applied, stale, duplicate, unhandled, retried, dead_lettered)."""

Index("ix_tidings_trace_correlation", trace_table.c.correlation_id, trace_table.c.seq)
Index("ix_tidings_trace_at", trace_table.c.at)
