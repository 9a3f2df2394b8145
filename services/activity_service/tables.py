from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, MetaData, String, Table

metadata = MetaData(info={"migrations": "activity_service:migrations"})

activities = Table(
    "activities",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(36), nullable=False, unique=True),
    Column("source_event_id", String(36), nullable=False, unique=True),
    Column("target_id", String(200), nullable=False, index=True),
    Column("target_type", String(100), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("old_data", JSON, nullable=True),
    Column("new_data", JSON, nullable=True),
    Column("author_name", String(200), nullable=True),
    Column("author_email", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("correlation_id", String(200), nullable=False, index=True),
    sqlite_autoincrement=True,
)
