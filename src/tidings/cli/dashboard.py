"""``tidings dashboard``: serve the dashboard over a deployment's broker and control store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tidings.cli.output import DEFAULT_HOME, DatabaseOption, HomeOption, fail
from tidings.config import Settings
from tidings.errors import ConfigurationError

__all__ = ["dashboard"]

_KEY_VARIABLES = ("TIDINGS_JWT_SECRET", "TIDINGS_JWT_PUBLIC_KEY", "TIDINGS_JWT_PUBLIC_KEY_FILE")


def _auth_environment(home: Path) -> dict[str, str]:
    """The environment tokens are verified from; with no key configured, the signing
    secret ``tidings up`` keeps in HOME (so the dashboard accepts its development token)."""
    environ = dict(os.environ)
    secret_file = home / "jwt-secret"
    if not any(environ.get(name) for name in _KEY_VARIABLES) and secret_file.exists():
        environ["TIDINGS_JWT_SECRET"] = secret_file.read_text().strip()
    return environ


def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    home: HomeOption = DEFAULT_HOME,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker", envvar="TIDINGS_BROKER", help="Broker URL (default: SQLite in HOME)."
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Serve the dashboard, a web page at http://HOST:PORT/, until Ctrl-C.

    Tokens are verified as the APIs verify them (TIDINGS_JWT_*; by default the secret in
    HOME); actions need the tidings-operators group."""
    from tidings.dashboard import create_app
    from tidings.runner import serve_api
    from tidings.web import AuthSettings

    settings = Settings(
        home=home,
        broker_url=broker or f"sqlite:///{home}/broker.db",
        database_url=database_url,
    )
    try:
        auth = AuthSettings.from_env(_auth_environment(home))
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"dashboard on http://{host}:{port}/ over {settings.broker_url}")
    serve_api(create_app(settings, auth), host=host, port=port)
