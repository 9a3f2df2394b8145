"""The Tenure domain's tables: tenures and their household members.

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
    if not inspector.has_table("tenures"):
        op.create_table(
            "tenures",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("payment_reference", sa.String(length=50), nullable=True),
            sa.Column("start_of_tenure_date", sa.Date(), nullable=True),
            sa.Column("end_of_tenure_date", sa.Date(), nullable=True),
            sa.Column("tenure_type", sa.JSON(), nullable=True),
            sa.Column("tenured_asset", sa.JSON(), nullable=True),
            sa.Column("version_number", sa.BigInteger(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if not inspector.has_table("household_members"):
        op.create_table(
            "household_members",
            sa.Column("tenure_id", sa.String(length=36), nullable=False),
            sa.Column("person_id", sa.String(length=36), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("type", sa.String(length=30), nullable=False),
            sa.Column("full_name", sa.String(length=400), nullable=False),
            sa.Column("date_of_birth", sa.Date(), nullable=True),
            sa.Column("is_responsible", sa.Boolean(), nullable=False),
            sa.Column("person_tenure_type", sa.String(length=50), nullable=True),
            sa.PrimaryKeyConstraint("tenure_id", "person_id"),
        )
        op.create_index("ix_household_members_person_id", "household_members", ["person_id"])


def downgrade() -> None:
    op.drop_table("household_members")
    op.drop_table("tenures")
