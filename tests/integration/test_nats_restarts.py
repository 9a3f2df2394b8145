"""A NATS server restarted again and again under load loses no acknowledged message.

nats-server 2.9 can bring an interest-retention stream back from a graceful stop with an
older last sequence when its consumers had emptied it; the sequences it then hands out
again lie behind every consumer's position, so those messages are never delivered. The
broker's streams use limits retention instead; these tests hold it to that.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from tidings.brokers.nats import NatsBroker
from tidings.topology import Topology

from ._nats_servers import NatsServer, wait_for_jetstream
from .test_nats_broker import (
    _consume_into,
    _publish_load,
    _wait_for,
    needs_nats_server,
    orders,
    subscription,
)

pytestmark = pytest.mark.nats

RESTARTS = 8


async def test_graceful_restarts_under_load_lose_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    needs_nats_server()
    server = NatsServer(tmp_path)
    server.start()
    try:
        await wait_for_jetstream(server.url)
        broker = await NatsBroker.open(f"{server.url}/?namespace=restarts")
        subs = [subscription(name, lease_seconds=3.0) for name in ("one", "two")]
        await broker.declare(Topology.build(["orders"], subs))
        published: list[str] = []
        seen: dict[str, list[str]] = {"one": [], "two": []}
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_publish_load(broker, published, stop, pause=0.005))] + [
            asyncio.create_task(_consume_into(broker, name, ids)) for name, ids in seen.items()
        ]
        try:
            for _ in range(RESTARTS):
                await asyncio.sleep(0.8)
                await asyncio.to_thread(server.stop, signal.SIGTERM)
                await asyncio.to_thread(server.start)
            await asyncio.sleep(0.8)
            stop.set()
            await tasks[0]
            assert len(published) > 1000, "too little load to test anything"
            for ids in seen.values():
                await _wait_for(ids, set(published), timeout=60)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await broker.close()
    finally:
        server.stop()


async def test_a_stream_made_with_interest_retention_keeps_it_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server refuses to change a stream's retention: declaring again over a stream an
    earlier version made leaves it as it is, with a warning, instead of failing."""
    needs_nats_server()
    server = NatsServer(tmp_path)
    server.start()
    try:
        await wait_for_jetstream(server.url)
        broker = await NatsBroker.open(f"{server.url}/?namespace=older")
        await broker._core.api.call(
            "STREAM.CREATE.older_orders",
            {
                "name": "older_orders",
                "subjects": ["older.orders.*"],
                "retention": "interest",
                "storage": "file",
                "num_replicas": 1,
            },
        )
        with caplog.at_level(logging.WARNING, logger="tidings.brokers.nats"):
            await broker.declare(Topology.build(["orders"], [subscription("work")]))
        info = await broker._core.api.stream_info("older_orders")
        assert info["config"]["retention"] == "interest"
        assert any("keeps retention=interest" in r.getMessage() for r in caplog.records)
        await broker.publish("orders", orders("x", 3))
        seen: list[str] = []
        consuming = asyncio.create_task(_consume_into(broker, "work", seen))
        try:
            await _wait_for(seen, {"x-0", "x-1", "x-2"}, timeout=10)
        finally:
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
        await broker.close()
    finally:
        server.stop()
