"""The Activity domain's table: the history of changes to other domains' records.

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
    if not inspector.has_table("activities"):
        op.create_table(
            "activities",
            sa.Column(
                "seq",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=True,
                nullable=False,
            ),
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("source_event_id", sa.String(length=36), nullable=False),
            sa.Column("target_id", sa.String(length=200), nullable=False),
            sa.Column("target_type", sa.String(length=100), nullable=False),
            sa.Column("event_type", sa.String(length=200), nullable=False),
            sa.Column("old_data", sa.JSON(), nullable=True),
            sa.Column("new_data", sa.JSON(), nullable=True),
            sa.Column("author_name", sa.String(length=200), nullable=True),
            sa.Column("author_email", sa.String(length=200), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("correlation_id", sa.String(length=200), nullable=False),
            sa.PrimaryKeyConstraint("seq"),
            sa.UniqueConstraint("id"),
            sa.UniqueConstraint("source_event_id"),
            sqlite_autoincrement=True,
        )
        op.create_index("ix_activities_correlation_id", "activities", ["correlation_id"])
        op.create_index("ix_activities_target_id", "activities", ["target_id"])


def downgrade() -> None:
    op.drop_table("activities")
