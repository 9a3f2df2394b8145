from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

alerts = Table(
    "alerts",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", String(200), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(50), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("tenure_id", String(200), nullable=False, index=True),
    Column("person_id", String(200), nullable=True, index=True),
    Column("message", String(1000), nullable=False),
    Column("correlation_id", String(200), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("event_id", "position"),
    sqlite_autoincrement=True,
)
"""One row per alert; an event gives one or more (``position`` orders them), once."""
