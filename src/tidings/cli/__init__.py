"""The ``tidings`` command."""

from tidings.cli.main import app, main

__all__ = ["app", "main"]
