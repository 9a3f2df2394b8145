"""The control database's tables: subscriptions, controls, listener heartbeats, trace.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "tidings_controls",
        sa.Column("subscription", sa.String(length=200), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription"),
    )
    op.create_table(
        "tidings_listeners",
        sa.Column("subscription", sa.String(length=200), nullable=False),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("settled", sa.BigInteger(), nullable=False),
        sa.Column("per_second", sa.Float(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription", "process"),
    )
    op.create_table(
        "tidings_subscriptions",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "tidings_trace",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("correlation_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=True),
        sa.Column("subscription", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=30), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("tidings_trace", schema=None) as batch_op:
        batch_op.create_index("ix_tidings_trace_at", ["at"], unique=False)
        batch_op.create_index(
            "ix_tidings_trace_correlation", ["correlation_id", "seq"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("tidings_trace", schema=None) as batch_op:
        batch_op.drop_index("ix_tidings_trace_correlation")
        batch_op.drop_index("ix_tidings_trace_at")

    op.drop_table("tidings_trace")
    op.drop_table("tidings_subscriptions")
    op.drop_table("tidings_listeners")
    op.drop_table("tidings_controls")
