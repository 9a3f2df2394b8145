"""The Alembic revisions of tidings' own tables (outbox, inbox, subset versions)."""
