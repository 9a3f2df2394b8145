"""What every command shares: the broker option, ``--json``, and how a failure is reported
(one line on stderr, exit code 2)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tidings.config import Settings
from tidings.errors import TidingsError

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_HOME",
    "BrokerOption",
    "DatabaseOption",
    "HomeOption",
    "JsonOption",
    "control_url",
    "fail",
    "run",
]

T = TypeVar("T")

DEFAULT_BROKER = "sqlite:///.tidings/broker.db"

BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="TIDINGS_BROKER",
        help="Broker URL (memory://, sqlite:///path, amqp://, nats://).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

DEFAULT_HOME = Path(".tidings")

HomeOption = Annotated[
    Path,
    typer.Option(
        "--home", envvar="TIDINGS_HOME", help="Data folder of the embedded default deployment."
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TIDINGS_DATABASE_URL",
        help="The deployment's shared database (default: SQLite files under --home).",
    ),
]


def control_url(home: Path, database_url: str | None) -> str:
    """The control store's URL for a deployment (see :mod:`tidings.control`)."""
    return Settings(home=home, broker_url="", database_url=database_url).control_database_url


def fail(message: str) -> typer.Exit:
    """Print ``tidings: message`` on stderr and return the exit to raise."""
    typer.echo(f"tidings: {message}", err=True)
    return typer.Exit(2)


_CLIENT_LOGGERS = ("aiormq", "aio_pika")
"""Client libraries that log a failure the command reports itself as its one line."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; a tidings error or an OS error becomes one line and exit 2."""
    for name in _CLIENT_LOGGERS:
        client = logging.getLogger(name)
        if not client.handlers:
            client.addHandler(logging.NullHandler())
    try:
        return asyncio.run(coro)
    except TidingsError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}") from None
