"""Case 3 of ``bench.py``: end-to-end latency of the reference deployment.

``tidings up`` runs in a temporary folder on free ports (on RabbitMQ or NATS, every domain on
PostgreSQL in schemas of its own). People are created, each in a tenure; then PATCHes rename
them at a fixed rate, open loop (each sent on schedule, whether or not the last answered),
each with a correlation id of its own. The figure for one update is the time from the 204 to
the tenure-listener's settle of its event (applied or stale), read from the deployment's
trace (the time the listener recorded, after its commit): no polling load on the APIs.

Beside it, at the same rate: the raw broker round trip, a message published with confirms by
the raw client and received by a consumer of the same process (one hop, no database)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from _bench_common import (
    AMQP_URL,
    NATS_URL,
    PG_URL,
    Results,
    drop_schemas,
    quantile,
)
from tidings.brokers import Message, connect
from tidings.cli.output import control_url
from tidings.control.tables import trace_table
from tidings.db import create_engine
from tidings.topology import Subscription, Topology

PEOPLE = 100


def free_base() -> int:
    """A base port with room for ``tidings up``: base-1 .. base+9 and base+100 .. base+109."""
    for _ in range(200):
        base = random.randrange(20_000, 50_000)
        ports = [*range(base - 1, base + 10), *range(base + 100, base + 110)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def deployment_args(backend: str, prefix: str) -> list[str]:
    namespace = prefix.replace("_", "-")
    if backend == "sqlite":
        return []
    broker = (
        f"{AMQP_URL}?namespace={namespace}"
        if backend == "amqp"
        else f"{NATS_URL}/?namespace={namespace}"
    )
    return ["--broker", broker, "--database-url", f"{PG_URL}?schema={prefix}"]


async def start(home: Path, base: int, args: list[str]) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TIDINGS_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "up",
        "--home",
        str(home),
        "--base-port",
        str(base),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(120):
        while line := (await process.stdout.readline()).decode():
            seen.append(line)
            if "tidings is up" in line:
                asyncio.create_task(_discard(process.stdout))
                return process
    raise RuntimeError("tidings up did not come up:\n" + "".join(seen[-20:]))


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


async def people(http: httpx.AsyncClient, person: str, tenure: str) -> list[str]:
    ids = []
    for i in range(PEOPLE):
        r = await http.post(
            f"{person}/api/v1/persons",
            json={"firstName": f"P{i}", "surname": "Start", "personTypes": ["Tenant"]},
        )
        r.raise_for_status()
        pid = r.json()["id"]
        r = await http.post(
            f"{tenure}/api/v1/tenures",
            json={
                "householdMembers": [{"id": pid, "fullName": f"P{i} Start", "isResponsible": True}]
            },
        )
        r.raise_for_status()
        ids.append(pid)
    return ids


async def patches(
    http: httpx.AsyncClient, person: str, ids: list[str], rate: int, seconds: float
) -> dict[str, tuple[float, float]]:
    """PATCH at ``rate`` per second, open loop; correlation id -> (sent, answered) wall times."""
    sent: dict[str, tuple[float, float]] = {}
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        cid = f"bench-{uuid.uuid4().hex}"
        before = time.time()
        try:
            r = await http.patch(
                f"{person}/api/v1/persons/{ids[i % len(ids)]}",
                json={"surname": f"S{i}"},
                headers={"x-correlation-id": cid},
            )
        except httpx.HTTPError:
            failures += 1
            return
        if r.status_code == 204:
            sent[cid] = (before, time.time())
        else:
            failures += 1

    count = int(rate * seconds)
    tasks = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(count):
        delay = started + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sent


async def settled_at(url: str, cids: list[str], wait: float) -> dict[str, float]:
    """When the tenure-listener settled each correlation id's event (wall time), from the
    trace; waits up to ``wait`` seconds for the last ones to be recorded."""
    engine = create_engine(url)
    found: dict[str, float] = {}
    deadline = time.monotonic() + wait
    try:
        while True:
            missing = [c for c in cids if c not in found]
            for i in range(0, len(missing), 500):
                query = select(trace_table.c.correlation_id, trace_table.c.at).where(
                    trace_table.c.subscription == "tenure-listener",
                    trace_table.c.outcome.in_(("applied", "stale")),
                    trace_table.c.correlation_id.in_(missing[i : i + 500]),
                )
                async with engine.connect() as connection:
                    for cid, at in (await connection.execute(query)).all():
                        if at.tzinfo is None:
                            at = at.replace(tzinfo=datetime.UTC)
                        found[cid] = min(found.get(cid, at.timestamp()), at.timestamp())
            if len(found) == len(cids) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


def summary(latencies: list[float], count: int) -> dict[str, float]:
    return {
        "p50": quantile(latencies, 0.50),
        "p95": quantile(latencies, 0.95),
        "p99": quantile(latencies, 0.99),
        "count": len(latencies),
        "sent": count,
    }


async def raw_round_trip(
    backend: str, namespace: str, folder: Path, rate: int, seconds: float
) -> list[float]:
    """Milliseconds from a confirmed publish by the raw client to its receipt, at ``rate``."""
    count = int(rate * seconds)
    received: dict[int, float] = {}
    sent: dict[int, float] = {}
    done = asyncio.Event()

    def got(i: int) -> None:
        received[i] = time.perf_counter()
        if len(received) >= count:
            done.set()

    async def pace(publish: Any) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = []
        for i in range(count):
            delay = started + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            tasks.append(asyncio.create_task(publish(i)))
        await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)

    if backend == "amqp":
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(
                f"{namespace}.rawrtt", durable=True, arguments={"x-queue-type": "quorum"}
            )

            async def on_message(message: Any) -> None:
                await message.ack()
                got(int(message.body))

            tag = await queue.consume(on_message)

            async def publish_amqp(i: int) -> None:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                    ),
                    routing_key=queue.name,
                )

            await pace(publish_amqp)
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)
        finally:
            await connection.close()
    elif backend == "nats":
        import nats

        nc = await nats.connect(NATS_URL)
        stream = f"{namespace}_rawrtt"
        try:
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=[f"{namespace}.rawrtt"])

            async def on_msg(msg: Any) -> None:
                await msg.ack()
                got(int(msg.data))

            sub = await js.subscribe(f"{namespace}.rawrtt", cb=on_msg, manual_ack=True)

            async def publish_nats(i: int) -> None:
                await js.publish(f"{namespace}.rawrtt", str(i).encode())

            await pace(publish_nats)
            await sub.unsubscribe()
            await js.delete_stream(stream)
        finally:
            await nc.close()
    else:
        broker = await connect(f"sqlite:///{folder}/rawrtt.db")
        try:
            await broker.declare(
                Topology.build(["rtt"], [Subscription(name="rtt", topics=("rtt",))])
            )

            async def consume() -> None:
                async with broker.consume("rtt") as consumer:
                    async for delivery in consumer:
                        got(int(delivery.message.body))
                        await delivery.ack()

            consuming = asyncio.create_task(consume())

            async def publish_sqlite(i: int) -> None:
                await broker.publish(
                    "rtt", [Message(id=f"r{i}", event_type="Ping", key="", body=str(i).encode())]
                )

            await pace(publish_sqlite)
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
        finally:
            await broker.close()
    return [(received[i] - sent[i]) * 1000 for i in received]


async def e2e_latency(
    backend: str, results: Results, rates: tuple[int, ...], seconds: float
) -> dict[str, Any]:
    prefix = f"bench_e2e_{uuid.uuid4().hex[:8]}"
    args = deployment_args(backend, prefix)
    folder = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    home = folder / ".tidings"
    base = free_base()
    process = await start(home, base, args)
    figures: dict[str, Any] = {"rates": {}, "raw": {}, "patch": {}}
    try:
        token = (home / "dev-token").read_text().strip()
        person, tenure = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
        ) as http:
            ids = await people(http, person, tenure)
            await asyncio.sleep(2)
            database = args[args.index("--database-url") + 1] if args else None
            control = control_url(home, database)
            for rate in rates:
                sent = await patches(http, person, ids, rate, seconds)
                settled = await settled_at(control, list(sent), wait=30)
                latencies = [(settled[c] - sent[c][1]) * 1000 for c in settled]
                from_sent = [(settled[c] - sent[c][0]) * 1000 for c in settled]
                figures.setdefault("from_sent", {})[rate] = summary(from_sent, int(rate * seconds))
                answered = [(a - s) * 1000 for s, a in sent.values()]
                figures["rates"][rate] = summary(latencies, int(rate * seconds))
                figures["patch"][rate] = summary(answered, int(rate * seconds))
                raw = await raw_round_trip(backend, prefix.replace("_", "-"), folder, rate, seconds)
                figures["raw"][rate] = summary(raw, int(rate * seconds))
                at = figures["rates"][rate]
                lost = int(rate * seconds) - at["count"]
                note = f"{at['count']} updates" + (f", {lost} not seen" if lost else "")
                for q in ("p50", "p95", "p99"):
                    results.add(
                        "e2e", backend, f"{rate}/s: 204 -> tenure updated, {q}", at[q], "ms", note
                    )
                results.add(
                    "e2e",
                    backend,
                    f"{rate}/s: PATCH sent -> tenure updated, p99",
                    figures["from_sent"][rate]["p99"],
                    "ms",
                )
                results.add(
                    "e2e",
                    backend,
                    f"{rate}/s: PATCH answered, p99",
                    figures["patch"][rate]["p99"],
                    "ms",
                )
                for q in ("p50", "p99"):
                    results.add(
                        "e2e",
                        backend,
                        f"{rate}/s: raw broker round trip, {q}",
                        figures["raw"][rate][q],
                        "ms",
                    )
    finally:
        await stop(process)
        if backend != "sqlite":
            broker: Any = await connect(args[args.index("--broker") + 1])
            with contextlib.suppress(Exception):
                await broker.delete_namespace()
            await broker.close()
            await drop_schemas(prefix)
        shutil.rmtree(folder, ignore_errors=True)
    return figures
