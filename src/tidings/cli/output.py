"""How every command reports a failure: one line on stderr, exit code 2."""

from __future__ import annotations

import typer

__all__ = ["fail"]


def fail(message: str) -> typer.Exit:
    """Print ``tidings: message`` on stderr and return the exit to raise."""
    typer.echo(f"tidings: {message}", err=True)
    return typer.Exit(2)
