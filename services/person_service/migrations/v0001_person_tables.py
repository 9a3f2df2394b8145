"""The Person domain's tables: persons and their tenure summaries.

Revision ID: 0001
Revises:

Creates only the tables that are missing, with their indexes, so that a database made by
``create_all`` before migrations existed is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("persons"):
        op.create_table(
            "persons",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("title", sa.String(length=20), nullable=True),
            sa.Column("first_name", sa.String(length=100), nullable=False),
            sa.Column("middle_name", sa.String(length=100), nullable=True),
            sa.Column("surname", sa.String(length=100), nullable=False),
            sa.Column("date_of_birth", sa.Date(), nullable=True),
            sa.Column("place_of_birth", sa.String(length=200), nullable=True),
            sa.Column("person_types", sa.JSON(), nullable=False),
            sa.Column("version_number", sa.BigInteger(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if not inspector.has_table("person_tenures"):
        op.create_table(
            "person_tenures",
            sa.Column("person_id", sa.String(length=36), nullable=False),
            sa.Column("tenure_id", sa.String(length=36), nullable=False),
            sa.Column("summary", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("person_id", "tenure_id"),
        )
        op.create_index("ix_person_tenures_tenure_id", "person_tenures", ["tenure_id"])


def downgrade() -> None:
    op.drop_table("person_tenures")
    op.drop_table("persons")
