"""The outbox table, kept in the domain's own database so that events commit with the
entity change that caused them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from tidings.db import metadata

__all__ = ["outbox_table"]

_SEQ = BigInteger().with_variant(Integer(), "sqlite")

outbox_table = Table(
    "tidings_outbox",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("topic", String(100), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("entity_version", BigInteger, nullable=True),
    Column("correlation_id", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("claimed_by", String(100), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    sqlite_autoincrement=True,
)

Index(
    "ix_tidings_outbox_pending",
    outbox_table.c.seq,
    sqlite_where=outbox_table.c.published_at.is_(None),
    postgresql_where=outbox_table.c.published_at.is_(None),
)
Index(
    "ix_tidings_outbox_entity_pending",
    outbox_table.c.topic,
    outbox_table.c.entity_id,
    outbox_table.c.seq,
    sqlite_where=outbox_table.c.published_at.is_(None),
    postgresql_where=outbox_table.c.published_at.is_(None),
)
Index("ix_tidings_outbox_published_at", outbox_table.c.published_at)
Index("ix_tidings_outbox_correlation", outbox_table.c.correlation_id)
