"""``tidings up``: run a deployment (by default the reference deployment) on this machine."""

from __future__ import annotations

import asyncio
import importlib
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from tidings.brokers import connect
from tidings.brokers.urls import without_password
from tidings.cli.push import deployment_secrets
from tidings.config import Settings
from tidings.control import ControlStore
from tidings.dashboard.auth import OPERATOR_GROUP
from tidings.errors import ConfigurationError
from tidings.supervisor import ProcessSpec, Supervisor
from tidings.web import mint_token

__all__ = ["WRITE_GROUP", "prepare_home", "run_up"]

WRITE_GROUP = "tidings-writers"
TOKEN_DAYS = 30


def prepare_home(home: Path) -> tuple[str, str, str]:
    """The data folder with its signing secret (made once, kept private), a development
    token that may write, and a service token for listeners that re-read sources."""
    home.mkdir(parents=True, exist_ok=True)
    secret_file = home / "jwt-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    secret = secret_file.read_text().strip()
    dev = mint_token(
        secret,
        subject="developer",
        name="Developer",
        email="developer@localhost",
        groups=[WRITE_GROUP, OPERATOR_GROUP],
        ttl_seconds=TOKEN_DAYS * 86_400,
    )
    service = mint_token(
        secret,
        subject="tidings-listener",
        name="tidings listener",
        email="",
        groups=["tidings-services"],
        ttl_seconds=TOKEN_DAYS * 86_400,
    )
    token_file = home / "dev-token"
    token_file.write_text(dev + "\n")
    token_file.chmod(0o600)
    return secret, dev, service


def dashboard_process(host: str, port: int) -> ProcessSpec:
    """The dashboard over the deployment (it finds the broker and databases in the
    environment every process gets)."""
    argv = ["-m", "tidings.cli", "dashboard", "--host", host, "--port", str(port)]
    return ProcessSpec(name="dashboard", argv=[sys.executable, *argv], url=f"http://{host}:{port}")


async def run_up(
    *,
    home: Path,
    broker: str | None,
    database_url: str | None,
    host: str,
    base_port: int,
    deployment: str,
    instances: int = 1,
    scale: dict[str, int] | None = None,
) -> None:
    if instances < 1:
        raise ConfigurationError("--instances must be at least 1")
    try:
        module: Any = importlib.import_module(deployment)
    except ImportError as exc:
        raise ConfigurationError(f"deployment {deployment!r} cannot be imported: {exc}") from None
    ports = {domain: base_port + i for i, domain in enumerate(module.PORTS)}
    try:
        specs: list[ProcessSpec] = module.processes(host, ports, instances, scale or {})
    except ValueError as exc:
        raise ConfigurationError(f"--scale: {exc}") from None
    specs.append(dashboard_process(host, base_port - 1))
    home = home.resolve()
    broker_url = broker or f"sqlite:///{home}/broker.db"
    secret, dev_token, service_token = prepare_home(home)

    b = await connect(broker_url)
    try:
        await b.declare(module.TOPOLOGY)
    finally:
        await b.close()
    control = Settings(home, broker_url, database_url).control_database_url
    async with ControlStore.open(control) as store:
        await store.declared(module.TOPOLOGY)
    typer.echo(
        f"topology applied to {without_password(broker_url)}: "
        f"{len(module.TOPOLOGY.topics)} topics, "
        f"{len(module.TOPOLOGY.subscriptions)} subscriptions"
    )

    env = {
        "TIDINGS_HOME": str(home),
        "TIDINGS_BROKER": broker_url,
        "TIDINGS_JWT_SECRET": secret,
        "TIDINGS_WRITE_GROUPS": WRITE_GROUP,
        "TIDINGS_SERVICE_TOKEN": service_token,
        **deployment_secrets(home, module.TOPOLOGY),
        **({"TIDINGS_DATABASE_URL": database_url} if database_url else {}),
    }
    supervisor = Supervisor(specs, env=env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    try:
        await supervisor.wait_ready()
        for spec in specs:
            typer.echo(f"  {spec.name:<20} {spec.url or '-'}")
        typer.echo(f"development token (also in {home / 'dev-token'}):\n{dev_token}")
        typer.echo("tidings is up; Ctrl-C stops every process")
        await stop.wait()
    finally:
        typer.echo("stopping...")
        await supervisor.stop()
        typer.echo("stopped")
