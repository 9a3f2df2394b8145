"""Cases 6 and 7 of ``bench.py``, on the embedded default (SQLite broker), with listeners in
processes of their own (``_bench_worker.py``):

6. horizontal scaling: a handler that waits 10 ms (I/O); events/s with 1, 2 and 4 processes
   (in-flight 8 each), and with in-flight 1, 8 and 32 in one process; counted in a window
   after a warm-up, with a backlog larger than the window can drain;
7. memory: the resident memory of one listener process while a backlog drains, sampled
   every 0.5 s (bounded by the in-flight limit, not by the backlog)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from bisect import bisect_left
from dataclasses import replace
from pathlib import Path
from typing import Any

from _bench_common import HERE, Results, median, person_events
from tidings.brokers import connect
from tidings.testing import event_message
from tidings.topology import Subscription, Topology

WORKER = HERE / "_bench_worker.py"
SCALING_IN_FLIGHT = 8


class Worker:
    """One listener process and what it reported: (wall time, settled so far) samples."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.samples: list[tuple[float, int]] = []
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, broker_url: str, subs: list[str], in_flight: int, handler: str) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            broker_url,
            ",".join(subs),
            str(in_flight),
            handler,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"listener process did not start: {line!r}")
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            sample = json.loads(line)
            self.samples.append((sample["t"], sample["settled"]))

    def settled_at(self, when: float) -> float:
        """Events settled by wall time ``when`` (linear between two samples)."""
        times = [t for t, _ in self.samples]
        i = bisect_left(times, when)
        if i == 0:
            return float(self.samples[0][1]) if self.samples else 0.0
        if i >= len(self.samples):
            return float(self.samples[-1][1])
        (t0, n0), (t1, n1) = self.samples[i - 1], self.samples[i]
        return n0 + (n1 - n0) * (when - t0) / (t1 - t0)

    @property
    def settled(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(Exception):
            await self._reading


async def fill(url: str, name: str, in_flight: int, count: int) -> None:
    """Declare subscription ``name`` and put ``count`` events in its backlog."""
    broker = await connect(url)
    try:
        await broker.declare(
            Topology.build(
                ["person"], [Subscription(name=name, topics=("person",), in_flight=in_flight)]
            )
        )
        events = person_events(min(count, 10_000))
        messages = [event_message(e) for e in events]
        for i in range(0, count, 1000):
            batch = [
                replace(messages[(i + j) % len(messages)], id=f"{name}-{i + j}")
                for j in range(min(1000, count - i))
            ]
            await broker.publish("person", batch)
    finally:
        await broker.close()


async def throughput(folder: Path, processes: int, in_flight: int, seconds: float) -> float:
    """Events/s of ``processes`` listeners with ``in_flight`` each, 10 ms handler."""
    url = f"sqlite:///{folder}/scaling-{processes}-{in_flight}.db"
    ceiling = processes * in_flight * 100
    await fill(url, "work", in_flight, int(ceiling * (seconds + 4) * 1.2))
    workers = await asyncio.gather(
        *(Worker.start(url, ["work"], in_flight, "sleep10") for _ in range(processes))
    )
    try:
        await asyncio.sleep(1.5)
        begin = time.time()
        await asyncio.sleep(seconds)
        end = time.time()
        await asyncio.sleep(0.3)
    finally:
        for worker in workers:
            await worker.stop()
    done = sum(w.settled_at(end) - w.settled_at(begin) for w in workers)
    return done / (end - begin)


async def scaling(results: Results, seconds: float, rounds: int) -> dict[str, Any]:
    """Case 6: each setting measured ``rounds`` times, the settings alternating; medians."""
    folder = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    settings = [
        (1, SCALING_IN_FLIGHT),
        (2, SCALING_IN_FLIGHT),
        (4, SCALING_IN_FLIGHT),
        (1, 1),
        (1, 32),
    ]
    rates: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    try:
        for round_ in range(rounds):
            for processes, in_flight in settings[round_ % 2 :] + settings[: round_ % 2]:
                rates[processes, in_flight].append(
                    await throughput(folder, processes, in_flight, seconds)
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures: dict[str, Any] = {
        "processes": {p: median(rates[p, SCALING_IN_FLIGHT]) for p in (1, 2, 4)},
        "in_flight": {n: median(rates[1, n]) for n in (1, SCALING_IN_FLIGHT, 32)},
        "in_flight_per_process": SCALING_IN_FLIGHT,
    }
    for processes, rate in figures["processes"].items():
        results.add(
            "scaling",
            "sqlite",
            f"{processes} process(es), in-flight {SCALING_IN_FLIGHT}, 10 ms handler",
            rate,
            "events/s",
            f"ceiling {processes * SCALING_IN_FLIGHT * 100}, median of {rounds}",
        )
    for in_flight, rate in figures["in_flight"].items():
        results.add(
            "scaling",
            "sqlite",
            f"1 process, in-flight {in_flight}, 10 ms handler",
            rate,
            "events/s",
            f"ceiling {in_flight * 100}, median of {rounds}",
        )
    return figures


async def memory(results: Results, backlog: int, limit: float) -> dict[str, Any]:
    """RSS of one listener process (no-op handler, in-flight 256) draining ``backlog``."""
    import psutil

    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    url = f"sqlite:///{folder}/memory.db"
    in_flight = 256
    figures: dict[str, Any] = {"backlog": backlog, "in_flight": in_flight, "rss": []}
    try:
        started = time.monotonic()
        await fill(url, "drain", in_flight, backlog)
        filled = time.monotonic() - started
        worker = await Worker.start(url, ["drain"], in_flight, "noop")
        proc = psutil.Process(worker.process.pid)
        began = time.monotonic()
        deadline = began + max(10.0, limit - filled - 30)
        try:
            while worker.settled < backlog and time.monotonic() < deadline:
                rss = proc.memory_info().rss / 2**20
                figures["rss"].append(
                    (round(time.monotonic() - began, 1), worker.settled, round(rss, 1))
                )
                await asyncio.sleep(0.5)
        finally:
            took = time.monotonic() - began
            await worker.stop()
        samples = [r for _, _, r in figures["rss"]] or [float("nan")]
        figures.update(
            drained=worker.settled,
            max_rss_mb=max(samples),
            start_rss_mb=samples[0],
            seconds=took,
            fill_seconds=filled,
            events_per_s=worker.settled / took,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    note = f"{figures['drained']:,} of {backlog:,} drained in {figures['seconds']:.0f} s"
    results.add(
        "memory",
        "sqlite",
        "listener RSS while the backlog drains, max",
        figures["max_rss_mb"],
        "MB",
        note,
    )
    results.add("memory", "sqlite", "listener RSS at start", figures["start_rss_mb"], "MB")
    return figures
