"""Run a listener or an API as a process: the composition root each service's ``main`` calls.

Both stop cleanly on SIGTERM and SIGINT: a listener finishes the events in hand and exits 0;
an API stops taking requests, finishes those in flight and stops its relay.

Both report to the deployment's control store (:mod:`tidings.control`): a relay traces what
it publishes; a listener declares its subscription there, follows the operator's controls
every ``TIDINGS_CONTROL_INTERVAL`` seconds (1 by default), beats and traces what it settles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers import Broker, connect
from tidings.config import Settings
from tidings.control import ControlStore, Recorder
from tidings.db import create_engine, create_tables, session_factory
from tidings.events.catalog import EventCatalog
from tidings.listener import Listener, ListenerRuntime
from tidings.metrics import serve_metrics
from tidings.outbox import Outbox, Relay
from tidings.topology import Subscription, Topology

__all__ = [
    "domain_resources",
    "publishing_domain",
    "rereads",
    "run_listener",
    "serve_api",
    "service_main",
]

log = logging.getLogger("tidings.runner")


@asynccontextmanager
async def domain_resources(
    settings: Settings, domain: str, metadata: MetaData
) -> AsyncIterator[tuple[AsyncEngine, Broker]]:
    """The domain's database (tables created if missing) and a broker connection."""
    engine = create_engine(settings.domain_database_url(domain))
    try:
        await create_tables(engine, metadata)
        broker = await connect(settings.broker_url)
        try:
            yield engine, broker
        finally:
            await broker.close()
    finally:
        await engine.dispose()


@asynccontextmanager
async def _control(settings: Settings) -> AsyncIterator[tuple[ControlStore, Recorder]]:
    """The deployment's control store, with a recorder writing trace records to it until the
    block ends (then what is left is written)."""
    async with ControlStore.open(settings.control_database_url) as store:
        recorder = Recorder(store)
        recorder.start()
        try:
            yield store, recorder
        finally:
            await recorder.close()


@asynccontextmanager
async def publishing_domain(
    settings: Settings, domain: str, metadata: MetaData
) -> AsyncIterator[tuple[AsyncEngine, Outbox]]:
    """What a domain API needs to publish: its database and an outbox, with a relay running
    beside it (woken by each commit) until the block ends.

    The relay waits out an unavailable broker or database by itself. Should it ever stop
    with an error anyway, the process is asked to stop (SIGTERM), so that its supervisor
    starts it again: an API must not go on accepting writes that nothing publishes."""
    async with (
        domain_resources(settings, domain, metadata) as (engine, broker),
        _control(settings) as (_, recorder),
    ):
        outbox = Outbox()
        relay = Relay(engine, broker, outbox=outbox, recorder=recorder)
        task = asyncio.create_task(relay.run())
        task.add_done_callback(_stop_process_if_failed)
        try:
            yield engine, outbox
        finally:
            task.remove_done_callback(_stop_process_if_failed)
            relay.stop()
            await task


def _stop_process_if_failed(task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    log.critical("the relay stopped: %r; stopping the process", task.exception())
    os.kill(os.getpid(), signal.SIGTERM)


async def run_listener(
    build: Callable[[], Awaitable[Listener]] | Callable[[], Listener],
    subscription: Subscription,
    *,
    settings: Settings,
    domain: str,
    metadata: MetaData,
    catalog: EventCatalog | None = None,
    batch_size: int = 1,
) -> None:
    """Declare ``subscription`` (and its topics) on the broker and in the control store, then
    consume it until SIGTERM/SIGINT. With ``TIDINGS_METRICS_PORT`` set, the process serves
    ``/metrics`` on that port."""

    port = os.environ.get("TIDINGS_METRICS_PORT")
    if port:
        serve_metrics(int(port), os.environ.get("TIDINGS_METRICS_HOST", "127.0.0.1"))
    interval = float(os.environ.get("TIDINGS_CONTROL_INTERVAL") or 1.0)
    async with (
        domain_resources(settings, domain, metadata) as (engine, broker),
        _control(settings) as (store, recorder),
    ):
        topology = Topology.build(subscription.topics, [subscription])
        await broker.declare(topology)
        await store.declared(topology)
        built = build()
        listener = built if isinstance(built, Listener) else await built
        runtime = ListenerRuntime(
            listener,
            broker=broker,
            subscription=subscription,
            sessions=session_factory(engine),
            catalog=catalog,
            batch_size=batch_size,
            control=store,
            recorder=recorder,
            control_interval=interval,
        )
        runtime.install_signal_handlers()
        log.info("listening", extra={"subscription": subscription.name})
        await runtime.run()
        log.info("stopped", extra={"subscription": subscription.name, **_stats(runtime)})


def _stats(runtime: ListenerRuntime) -> dict[str, int]:
    return {outcome.value: count for outcome, count in runtime.stats.items()}


def rereads(subscription: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``subscription`` keeps its subsets by re-reading the source API for every event
    (thin events) rather than from event data: listed in ``TIDINGS_REREAD`` (comma
    separated, or ``*`` for all)."""

    names = {n.strip() for n in (environ or os.environ).get("TIDINGS_REREAD", "").split(",")}
    return "*" in names or subscription in names


def serve_api(app: object, *, host: str, port: int) -> None:
    """Serve an ASGI app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)  # type: ignore[arg-type]


def service_main(
    prog: str,
    *,
    api: Callable[[Settings], object] | None = None,
    listener: Callable[[Settings], Coroutine[Any, Any, None]] | None = None,
    port: int = 8000,
    argv: list[str] | None = None,
) -> None:
    """The command line of one service: ``python -m <prog> api [--host H] [--port P]`` or
    ``python -m <prog> listener``, configured from the environment (see
    :mod:`tidings.config`) and logging JSON lines."""
    import argparse
    import asyncio

    from tidings.logs import configure_logging

    roles = [name for name, part in (("api", api), ("listener", listener)) if part]
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("role", choices=roles)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("TIDINGS_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    if args.role == "api" and api is not None:
        serve_api(api(settings), host=args.host, port=args.port)
    elif listener is not None:
        asyncio.run(listener(settings))
