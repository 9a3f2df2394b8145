"""tidings beside the raw clients and FastStream, measured in one run on one machine.

Cases (each bounded in time; a case or backend that cannot run is reported and skipped):

1. listener throughput, no-op handler, per backend: the tidings listener without and with
   the inbox, the raw client's manual-ack loop, FastStream's subscriber, same queue;
2. relay throughput: outbox rows -> confirmed on the broker, beside the raw client's
   confirmed publish;
3. end-to-end latency of ``tidings up``: PATCH person -> tenure subset updated, p50/p95/p99
   at fixed open-loop rates, beside the raw broker round trip at the same rate;
4. why events: PATCH latency with the outbox as subscriptions grow, beside the same write
   calling its dependents over HTTP, and the plain write;
5. fan-out: one topic, 1 to 50 subscriptions;
6. horizontal scaling: a handler waiting 10 ms, 1/2/4 processes and in-flight 1/8/32;
7. memory: listener RSS while a backlog drains.

Ratios come from figures taken side by side in the same run (variants alternate between
rounds), so they hold on a busy machine where absolute figures do not.

Prints a table, writes ``benchmarks/results/latest.json`` and PNG plots beside it.

Usage: .venv/bin/python benchmarks/bench.py [--quick] [--cases 1,2,...]
       [--backends amqp,nats,sqlite] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _bench_common import BACKENDS, HERE, Results, available, machine, place

CASES = {
    1: "listener",
    2: "relay",
    3: "e2e",
    4: "why-events",
    5: "fan-out",
    6: "scaling",
    7: "memory",
}


@dataclass(frozen=True)
class Sizes:
    listener_events: int
    listener_rounds: int
    relay_events: int
    relay_rounds: int
    e2e_seconds: float
    e2e_rates: tuple[int, ...]
    why_requests: int
    why_widths: tuple[int, ...]
    fan_events: int
    fan_widths: tuple[int, ...]
    scaling_seconds: float
    scaling_rounds: int
    backlog: int
    case_limit: float


FULL = Sizes(
    listener_events=10_000,
    listener_rounds=3,
    relay_events=10_000,
    relay_rounds=3,
    e2e_seconds=6.0,
    e2e_rates=(50, 200, 500),
    why_requests=400,
    why_widths=(1, 5, 10, 20),
    fan_events=1_000,
    fan_widths=(1, 5, 10, 25, 50),
    scaling_seconds=6.0,
    scaling_rounds=3,
    backlog=1_000_000,
    case_limit=900.0,
)
QUICK = Sizes(
    listener_events=3_000,
    listener_rounds=2,
    relay_events=3_000,
    relay_rounds=2,
    e2e_seconds=3.0,
    e2e_rates=(50, 200, 500),
    why_requests=100,
    why_widths=(1, 20),
    fan_events=200,
    fan_widths=(1, 10, 50),
    scaling_seconds=3.0,
    scaling_rounds=1,
    backlog=50_000,
    case_limit=240.0,
)


async def run_case(
    number: int, backends: list[str], sizes: Sizes, results: Results
) -> dict[str, Any]:
    """Run case ``number`` on each backend it applies to; its figures by backend."""
    from _bench_throughput import fan_out, listener_throughput, relay_throughput

    figures: dict[str, Any] = {}
    limit = sizes.case_limit
    name = CASES[number]
    if number in (1, 2, 5):
        for backend in backends:
            async with place(backend, name.replace("-", "")) as here:
                if number == 1:
                    work = listener_throughput(
                        here, results, sizes.listener_events, sizes.listener_rounds, limit
                    )
                elif number == 2:
                    work = relay_throughput(
                        here, results, sizes.relay_events, sizes.relay_rounds, limit
                    )
                else:
                    if backend == "amqp":
                        here.options = "&queue_type=classic"
                    work = fan_out(here, results, sizes.fan_events, list(sizes.fan_widths), limit)
                figures[backend] = await guarded(work, limit, name, backend, results)
    elif number == 3:
        from _bench_e2e import e2e_latency

        for backend in backends:
            figures[backend] = await guarded(
                e2e_latency(backend, results, sizes.e2e_rates, sizes.e2e_seconds),
                limit,
                name,
                backend,
                results,
            )
    elif number == 4:
        from _bench_why import why_events

        figures["sqlite"] = await guarded(
            why_events(results, sizes.why_requests, list(sizes.why_widths)),
            limit,
            name,
            "sqlite",
            results,
        )
    elif number == 6:
        from _bench_processes import scaling

        figures["sqlite"] = await guarded(
            scaling(results, sizes.scaling_seconds, sizes.scaling_rounds),
            limit,
            name,
            "sqlite",
            results,
        )
    elif number == 7:
        from _bench_processes import memory

        figures["sqlite"] = await guarded(
            memory(results, sizes.backlog, limit), limit + 60, name, "sqlite", results
        )
    return figures


async def guarded(work: Any, limit: float, case: str, backend: str, results: Results) -> Any:
    """Await ``work`` for up to ``limit`` seconds; a failure or timeout is noted, not raised."""
    try:
        return await asyncio.wait_for(work, limit)
    except TimeoutError:
        results.notes.append(f"{case} on {backend}: stopped at its limit of {limit:.0f} s")
    except Exception as exc:  # noqa: BLE001 - one case failing must not lose the others
        logging.getLogger("bench").exception("%s on %s failed", case, backend)
        results.notes.append(f"{case} on {backend}: failed: {type(exc).__name__}: {exc}")
    return None


def ratio(a: float | None, b: float | None) -> float:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def headline(by_backend: dict[str, Any]) -> str | None:
    """The backend a named entry reports: RabbitMQ when it ran, else the first that did."""
    for backend in ("amqp", "nats", "sqlite"):
        if by_backend.get(backend):
            return backend
    return None


def named_entries(figures: dict[int, dict[str, Any]], results: Results) -> None:
    """The targets of issue 7 as named entries (see ``latest.json``)."""
    listener = figures.get(1, {})
    ratios: dict[str, dict[str, float]] = {}
    for backend, f in listener.items():
        if f:
            ratios[backend] = {
                "vs_raw": ratio(f.get("tidings"), f.get("raw")),
                "inbox_vs_raw": ratio(f.get("tidings-inbox"), f.get("raw")),
                "vs_faststream": ratio(f.get("tidings"), f.get("faststream")),
            }
    if (backend := headline(listener)) is not None:
        f = listener[backend]
        every = {b: {k: round(v, 3) for k, v in r.items()} for b, r in ratios.items()}
        results.entry(
            "listener_vs_raw",
            backend,
            ratios[backend]["vs_raw"],
            ">= 0.8",
            tidings_events_per_s=f.get("tidings"),
            raw_events_per_s=f.get("raw"),
            cpu_us_per_event=f.get("cpu_us_per_event"),
            ratios_by_backend=every,
        )
        fast = next(
            (b for b in ("amqp", "nats") if listener.get(b, {}) and listener[b].get("faststream")),
            None,
        )
        if fast is not None:
            results.entry(
                "listener_vs_faststream",
                fast,
                ratios[fast]["vs_faststream"],
                "> 1.0",
                tidings_events_per_s=listener[fast].get("tidings"),
                faststream_events_per_s=listener[fast].get("faststream"),
                ratios_by_backend=every,
            )
        results.entry(
            "listener_inbox_vs_raw",
            backend,
            ratios[backend]["inbox_vs_raw"],
            ">= 0.5 (inbox on PostgreSQL)",
            tidings_inbox_events_per_s=f.get("tidings-inbox"),
            raw_events_per_s=f.get("raw"),
            ratios_by_backend=every,
        )
    relay = figures.get(2, {})
    if (backend := headline(relay)) is not None:
        f = relay[backend]
        results.entry(
            "relay_vs_raw",
            backend,
            ratio(f.get("relay"), f.get("raw")),
            ">= 0.8",
            relay_events_per_s=f.get("relay"),
            raw_events_per_s=f.get("raw"),
            ratios_by_backend={
                b: round(ratio(r.get("relay"), r.get("raw")), 3) for b, r in relay.items() if r
            },
        )
    for backend, f in figures.get(3, {}).items():
        if f and 200 in f["rates"]:
            at = f["rates"][200]
            results.entry(
                f"e2e_p99_ms_{backend}",
                backend,
                at["p99"],
                "< 100 ms" if backend == "sqlite" else "< 50 ms",
                rate_per_s=200,
                p50_ms=at["p50"],
                p95_ms=at["p95"],
                p99_ms=at["p99"],
                updates=at["count"],
                not_seen=at["sent"] - at["count"],
                patch_answered_p99_ms=f["patch"][200]["p99"],
                sent_to_updated_p99_ms=f.get("from_sent", {}).get(200, {}).get("p99"),
                raw_round_trip_p99_ms=f["raw"].get(200, {}).get("p99"),
                raw_round_trip_p50_ms=f["raw"].get(200, {}).get("p50"),
            )
    why = figures.get(4, {}).get("sqlite")
    if why:
        widest = max(why["events"])
        results.entry(
            "why_events_ratio",
            "sqlite",
            ratio(why["events"][widest]["p50"], why["plain"]["p50"]),
            "<= 1.10 (PATCH p50 with 20 subscriptions / plain write p50)",
            subscriptions=widest,
            events_p50_ms=why["events"][widest]["p50"],
            plain_p50_ms=why["plain"]["p50"],
            synchronous_p50_ms=why["sync"][widest]["p50"],
        )
    scale = figures.get(6, {}).get("sqlite")
    if scale and scale["processes"].get(1) and scale["processes"].get(4):
        results.entry(
            "scaling_4_vs_1",
            "sqlite",
            ratio(scale["processes"][4], scale["processes"][1]),
            ">= 3.0",
            one_process_events_per_s=scale["processes"][1],
            four_processes_events_per_s=scale["processes"][4],
            in_flight_per_process=scale["in_flight_per_process"],
            handler="await asyncio.sleep(0.01)",
        )
    memory = figures.get(7, {}).get("sqlite")
    if memory:
        results.entry(
            "listener_rss_mb",
            "sqlite",
            memory["max_rss_mb"],
            "< 150 MB",
            backlog=memory["backlog"],
            drained=memory["drained"],
            in_flight=memory["in_flight"],
            start_rss_mb=memory["start_rss_mb"],
            events_per_s=memory["events_per_s"],
        )


def table(results: Results) -> str:
    lines = [f"{'case':<10} {'backend':<7} {'what':<60} {'figure':>12}  unit", "-" * 100]
    lines += [
        f"{r.case:<10} {r.backend:<7} {r.what:<60} {r.value:>12,.1f}  {r.unit}"
        for r in results.rows
    ]
    lines += ["", f"{'target':<24} {'broker':<20} {'value':>9}  target", "-" * 80]
    lines += [
        f"{name:<24} {e['broker']:<20} {e['value']:>9.2f}  {e['target']}"
        for name, e in results.entries.items()
    ]
    lines += [f"note: {n}" for n in results.notes]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    cases = [int(c) for c in args.cases.split(",")] if args.cases else list(CASES)
    backends = []
    for backend in args.backends.split(","):
        if (why := available(backend)) is None:
            backends.append(backend)
        else:
            print(f"{backend}: skipped ({why})", flush=True)
    results = Results()
    if args.quick:
        results.notes.append(
            f"quick run: smaller counts; memory backlog {sizes.backlog:,} events, not 1,000,000"
        )
    if 5 in cases and "amqp" in backends:
        results.notes.append(
            "fan-out on RabbitMQ uses classic queues (queue_type=classic): a subscription is 16"
            " queues there (its queue, dead letters, 14 delay tiers), and 50 subscriptions as"
            " quorum queues (800) left a shared 2-core RabbitMQ refusing connections"
        )
    figures: dict[int, dict[str, Any]] = {}
    started = time.monotonic()
    for number in cases:
        print(f"case {number}: {CASES[number]}", flush=True)
        figures[number] = await run_case(number, backends, sizes, results)
    named_entries(figures, results)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    for entry in results.entries.values():
        entry["date"], entry["machine"] = date, where
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": date,
        "machine": where,
        "mode": "quick" if args.quick else "full",
        "seconds": round(time.monotonic() - started, 1),
        **results.entries,
        "rows": [asdict(r) for r in results.rows],
        "series": {CASES[n]: f for n, f in figures.items()},
        "notes": results.notes,
    }
    (out / "latest.json").write_text(json.dumps(_plain(report), indent=2) + "\n")
    from _bench_plots import plot_all

    plot_all(figures, out, f"{date}, {where}")
    print()
    print(table(results))
    print(f"\nwrote {out / 'latest.json'} and plots in {out} ({date}; {where})")
    return 0


def _plain(value: Any) -> Any:
    """``value`` as JSON takes it: NaN as null, rounded floats, keys as text."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, a short run")
    parser.add_argument("--cases", default="", help="e.g. 1,2 (default: every case)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", default=str(HERE / "results"))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main(parser.parse_args())))
