"""Alembic revisions of the Tenure domain's tables (see :mod:`tidings.migrations`)."""
