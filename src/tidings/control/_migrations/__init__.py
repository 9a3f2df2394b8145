"""Revisions of the control database's tables (see :mod:`tidings.migrations`)."""
