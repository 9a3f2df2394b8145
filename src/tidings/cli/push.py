"""``tidings push``: run the push dispatcher over a deployment's push subscriptions."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from tidings.cli.output import DEFAULT_HOME, DatabaseOption, HomeOption, fail, run
from tidings.config import Settings
from tidings.errors import ConfigurationError, TidingsError
from tidings.topology import Subscription, Topology

__all__ = ["deployment_secrets", "push"]

log = logging.getLogger("tidings.push")


def deployment_secrets(
    home: Path, topology: Topology, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The signing secret of each push subscription of ``topology`` whose variable the
    environment does not set: made once and kept (private) in ``HOME/webhook-secrets/``,
    so that ``tidings up`` gives the same secret to the dispatcher and to a receiver it
    runs, across restarts."""
    from tidings.push import new_secret

    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for sub in topology.subscriptions:
        name = sub.secret_env
        if name is None or environ.get(name) or name in found:
            continue
        folder = home / "webhook-secrets"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / name
        if not path.exists():
            path.write_text(new_secret() + "\n")
            path.chmod(0o600)
        found[name] = path.read_text().strip()
    return found


def _endpoints(values: list[str]) -> dict[str, str]:
    endpoints = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise fail(f"--url takes SUBSCRIPTION=URL, not {value!r}")
        endpoints[name] = url
    return endpoints


async def _serve(
    settings: Settings,
    topology: Topology | None,
    names: list[str],
    endpoints: dict[str, str],
    interval: float,
) -> None:
    from tidings.brokers import connect
    from tidings.control import ControlStore, Recorder
    from tidings.push import PushDispatcher

    async with ControlStore.open(settings.control_database_url) as store:
        declared = list(topology.subscriptions) if topology else await store.subscriptions()
        chosen = [s for s in declared if s.push and (not names or s.name in names)]
        unknown = set(names) - {s.name for s in chosen}
        if unknown:
            raise ConfigurationError(f"no push subscription {sorted(unknown)[0]!r} is declared")
        if not chosen:
            raise ConfigurationError("no push subscription is declared")
        subs = [_with_url(s, endpoints.get(s.name)) for s in chosen]
        topics = sorted({t for s in subs for t in s.topics})
        effective = Topology.build(topics, subs)
        broker = await connect(settings.broker_url)
        try:
            await broker.declare(effective)
            await store.declared(effective)
            recorder = Recorder(store)
            recorder.start()
            try:
                dispatcher = PushDispatcher(
                    subs, broker=broker, control=store, recorder=recorder, control_interval=interval
                )
                dispatcher.install_signal_handlers()
                for sub in subs:
                    log.info("pushing to %s", sub.url, extra={"subscription": sub.name})
                await dispatcher.run()
            finally:
                await recorder.close()
        finally:
            await broker.close()


def _with_url(sub: Subscription, url: str | None) -> Subscription:
    if url is None:
        return sub
    try:
        return Subscription.model_validate({**sub.model_dump(), "url": url})
    except ValidationError as exc:
        raise ConfigurationError(f"--url {sub.name}: {exc.errors()[0]['msg']}") from None


def push(
    home: HomeOption = DEFAULT_HOME,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker", envvar="TIDINGS_BROKER", help="Broker URL (default: SQLite in HOME)."
        ),
    ] = None,
    database_url: DatabaseOption = None,
    topology: Annotated[
        Path | None,
        typer.Option(
            "--topology",
            help="Topology TOML file to declare and dispatch "
            "(default: the push subscriptions declared in the control store).",
        ),
    ] = None,
    subscription: Annotated[
        list[str] | None,
        typer.Option("--subscription", "-s", help="Dispatch only this one (repeatable)."),
    ] = None,
    url: Annotated[
        list[str] | None,
        typer.Option("--url", help="SUBSCRIPTION=URL: push that subscription there instead."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", envvar="TIDINGS_METRICS_PORT", help="Serve /metrics on this port."
        ),
    ] = None,
) -> None:
    """POST each event of every push subscription to its endpoint, signed (Standard
    Webhooks), until Ctrl-C.

    2xx acknowledges; 408, 429, 5xx, timeouts and connection failures are retried with
    backoff (Retry-After honoured); other answers dead-letter the event with the status and
    body. Each subscription has its own connections and circuit breaker. Signing secrets come
    from the variables the subscriptions name (secret_env)."""
    from tidings.logs import configure_logging
    from tidings.metrics import serve_metrics

    configure_logging(os.environ.get("TIDINGS_LOG_LEVEL", "INFO"))
    try:
        declared = Topology.from_toml(topology) if topology else None
    except TidingsError as exc:
        raise fail(str(exc)) from None
    settings = Settings(
        home=home, broker_url=broker or f"sqlite:///{home}/broker.db", database_url=database_url
    )
    if metrics_port:
        serve_metrics(metrics_port, os.environ.get("TIDINGS_METRICS_HOST", "127.0.0.1"))
    interval = float(os.environ.get("TIDINGS_CONTROL_INTERVAL") or 1.0)
    run(_serve(settings, declared, subscription or [], _endpoints(url or []), interval))
