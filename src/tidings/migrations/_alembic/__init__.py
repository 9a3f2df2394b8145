"""Alembic's script folder for :mod:`tidings.migrations`: ``env.py`` and the revision
template, shared by every migration tree."""
