"""The Tenure domain's own tables. ``household_members.full_name`` and ``date_of_birth`` are
the subset copied from people; the other member columns are the tenure's own facts."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData(info={"migrations": "tenure_service:migrations"})

tenures = Table(
    "tenures",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("payment_reference", String(50), nullable=True),
    Column("start_of_tenure_date", Date, nullable=True),
    Column("end_of_tenure_date", Date, nullable=True),
    Column("tenure_type", JSON, nullable=True),
    Column("tenured_asset", JSON, nullable=True),
    Column("version_number", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

household_members = Table(
    "household_members",
    metadata,
    Column("tenure_id", String(36), primary_key=True),
    Column("person_id", String(36), primary_key=True, index=True),
    Column("position", Integer, nullable=False),
    Column("type", String(30), nullable=False),
    Column("full_name", String(400), nullable=False),
    Column("date_of_birth", Date, nullable=True),
    Column("is_responsible", Boolean, nullable=False),
    Column("person_tenure_type", String(50), nullable=True),
)
