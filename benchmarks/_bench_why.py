"""Case 4 of ``bench.py``: why events. PATCH latency of ``why_events_app.py`` (one process,
SQLite) as dependents grow: with the outbox (K subscriptions on the embedded broker, K
listeners draining them in another process meanwhile), calling K dependents over HTTP, and
the plain write. Requests are sent one at a time (the latency a user sees, without
queueing); the three designs alternate in rounds."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _bench_common import HERE, Results, median, quantile
from _bench_processes import Worker
from tidings.brokers import connect
from tidings.topology import Subscription, Topology

APP = HERE / "why_events_app.py"
MODES = ("plain", "events", "sync")
ROUNDS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(sys.executable, str(APP), *args)
    url = f"http://127.0.0.1:{args[1]}/docs"
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(url)).status_code == 200:
                    return process
            except httpx.HTTPError:
                pass
            if process.returncode is not None:
                break
            await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{APP.name} {args[0]} did not start")


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await process.wait()


async def why_events(results: Results, requests: int, widths: list[int]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-why-"))
    broker_url = f"sqlite:///{folder}/broker.db"
    api_port, dependents_port = free_port(), free_port()
    broker = await connect(broker_url)
    await broker.declare(
        Topology.build(["person"], [Subscription(name="fan-0", topics=("person",))])
    )
    processes = [await serve("dependent", str(dependents_port))]
    latencies: dict[str, dict[int, list[float]]] = {mode: {} for mode in MODES}
    try:
        processes.append(
            await serve(
                "serve",
                str(api_port),
                f"sqlite:///{folder}/api.db",
                broker_url,
                f"http://127.0.0.1:{dependents_port}",
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
            sent = 0

            async def patch(mode: str, width: int) -> float:
                nonlocal sent
                sent += 1
                started = time.perf_counter()
                r = await http.patch(
                    f"/people/p{sent % 100}",
                    params={"mode": mode, "dependents": width},
                    json={"surname": f"S{sent}"},
                )
                took = (time.perf_counter() - started) * 1000
                r.raise_for_status()
                return took

            for mode in MODES:  # warm-up
                for _ in range(20):
                    await patch(mode, widths[0])
            for width in widths:
                subs = [Subscription(name=f"fan-{i}", topics=("person",)) for i in range(width)]
                await broker.declare(Topology.build(["person"], subs))
                listeners = await Worker.start(broker_url, [s.name for s in subs], 16, "noop")
                try:
                    for round_ in range(ROUNDS):
                        order = MODES[round_ % 3 :] + MODES[: round_ % 3]
                        for mode in order:
                            for _ in range(requests // ROUNDS):
                                took = await patch(mode, width)
                                latencies[mode].setdefault(width, []).append(took)
                finally:
                    await listeners.stop()
    finally:
        for process in processes:
            await stop(process)
        await broker.close()
        shutil.rmtree(folder, ignore_errors=True)
    figures: dict[str, Any] = {"plain": {}, "events": {}, "sync": {}}
    every_plain = [v for values in latencies["plain"].values() for v in values]
    figures["plain"] = {"p50": median(every_plain), "p95": quantile(every_plain, 0.95)}
    for mode in ("events", "sync"):
        for width, values in latencies[mode].items():
            figures[mode][width] = {"p50": median(values), "p95": quantile(values, 0.95)}
    figures["plain_by_width"] = {
        width: {"p50": median(values), "p95": quantile(values, 0.95)}
        for width, values in latencies["plain"].items()
    }
    results.add("why", "sqlite", "plain write, PATCH p50", figures["plain"]["p50"], "ms")
    for width in widths:
        for mode, label in (("events", "outbox"), ("sync", "HTTP to dependents")):
            at = figures[mode][width]
            results.add(
                "why",
                "sqlite",
                f"{width:>2} dependents, {label}: PATCH p50",
                at["p50"],
                "ms",
                f"p95 {at['p95']:.1f} ms",
            )
    return figures
