"""tidings' tables: outbox, inbox, subset versions.

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

_PENDING = sa.text("published_at IS NULL")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("tidings_outbox"):
        op.create_table(
            "tidings_outbox",
            sa.Column(
                "seq",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=True,
                nullable=False,
            ),
            sa.Column("event_id", sa.String(length=36), nullable=False),
            sa.Column("topic", sa.String(length=100), nullable=False),
            sa.Column("event_type", sa.String(length=200), nullable=False),
            sa.Column("entity_id", sa.String(length=200), nullable=False),
            sa.Column("entity_version", sa.BigInteger(), nullable=True),
            sa.Column("correlation_id", sa.String(length=200), nullable=False),
            sa.Column("body", sa.LargeBinary(), nullable=False),
            sa.Column("headers", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("claimed_by", sa.String(length=100), nullable=True),
            sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("seq"),
            sa.UniqueConstraint("event_id"),
            sqlite_autoincrement=True,
        )
        op.create_index("ix_tidings_outbox_correlation", "tidings_outbox", ["correlation_id"])
        op.create_index(
            "ix_tidings_outbox_entity_pending",
            "tidings_outbox",
            ["topic", "entity_id", "seq"],
            sqlite_where=_PENDING,
            postgresql_where=_PENDING,
        )
        op.create_index(
            "ix_tidings_outbox_pending",
            "tidings_outbox",
            ["seq"],
            sqlite_where=_PENDING,
            postgresql_where=_PENDING,
        )
        op.create_index("ix_tidings_outbox_published_at", "tidings_outbox", ["published_at"])
    if not inspector.has_table("tidings_inbox"):
        op.create_table(
            "tidings_inbox",
            sa.Column("subscription", sa.String(length=100), nullable=False),
            sa.Column("event_id", sa.String(length=36), nullable=False),
            sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("subscription", "event_id"),
        )
        op.create_index("ix_tidings_inbox_processed_at", "tidings_inbox", ["processed_at"])
    if not inspector.has_table("tidings_subset_versions"):
        op.create_table(
            "tidings_subset_versions",
            sa.Column("subset", sa.String(length=100), nullable=False),
            sa.Column("source_id", sa.String(length=200), nullable=False),
            sa.Column("holder_id", sa.String(length=200), nullable=False),
            sa.Column("field", sa.String(length=100), nullable=False),
            sa.Column("version", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("subset", "source_id", "holder_id", "field"),
        )
        op.create_index(
            "ix_tidings_subset_versions_holder",
            "tidings_subset_versions",
            ["subset", "holder_id"],
        )


def downgrade() -> None:
    op.drop_table("tidings_subset_versions")
    op.drop_table("tidings_inbox")
    op.drop_table("tidings_outbox")
