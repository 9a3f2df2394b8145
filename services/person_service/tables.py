"""The Person domain's own tables. ``person_tenures`` is the subset copied from tenures."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Date, DateTime, MetaData, String, Table

metadata = MetaData(info={"migrations": "person_service:migrations"})

persons = Table(
    "persons",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", String(20), nullable=True),
    Column("first_name", String(100), nullable=False),
    Column("middle_name", String(100), nullable=True),
    Column("surname", String(100), nullable=False),
    Column("date_of_birth", Date, nullable=True),
    Column("place_of_birth", String(200), nullable=True),
    Column("person_types", JSON, nullable=False),
    Column("version_number", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

person_tenures = Table(
    "person_tenures",
    metadata,
    Column("person_id", String(36), primary_key=True),
    Column("tenure_id", String(36), primary_key=True, index=True),
    Column("summary", JSON, nullable=False),
)
