"""Alembic revisions of the Person domain's tables (see :mod:`tidings.migrations`)."""
