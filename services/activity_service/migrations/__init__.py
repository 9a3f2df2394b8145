"""Alembic revisions of the Activity domain's tables (see :mod:`tidings.migrations`)."""
