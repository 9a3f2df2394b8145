"""PNG plots of a ``bench.py`` run (matplotlib, Agg backend), one per case that ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first

BACKEND_NAMES = {"amqp": "RabbitMQ", "nats": "NATS", "sqlite": "SQLite (embedded)"}
VARIANTS = {
    "tidings": "tidings listener",
    "tidings-inbox": "tidings listener + inbox",
    "raw": "raw client",
    "faststream": "FastStream",
}


def plot_all(figures: dict[int, dict[str, Any]], out: Path, caption: str) -> list[Path]:
    """Write the plots of the cases in ``figures`` to ``out``; return their paths."""
    made = []
    for number, draw, name in (
        (1, _listener, "listener.png"),
        (2, _relay, "relay.png"),
        (3, _e2e, "e2e_latency.png"),
        (4, _why, "why_events.png"),
        (5, _fan_out, "fan_out.png"),
        (6, _scaling, "scaling.png"),
        (7, _memory, "memory.png"),
    ):
        data = {k: v for k, v in figures.get(number, {}).items() if v}
        if not data:
            continue
        fig = draw(data)
        fig.text(0.01, 0.005, caption, fontsize=6, color="#666666")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]], unit: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width - 0.4 + width / 2 for g in range(len(groups))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _listener(data: dict[str, dict[str, float]]) -> Any:
    fig, ax = plt.subplots(figsize=(8, 4.2))
    backends = list(data)
    series = {
        label: [data[b].get(key, 0.0) for b in backends]
        for key, label in VARIANTS.items()
        if any(key in data[b] for b in backends)
    }
    _bars(ax, [BACKEND_NAMES[b] for b in backends], series, "events/s (no-op handler)")
    ax.set_title("Listener throughput, one process")
    return fig


def _relay(data: dict[str, dict[str, float]]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4))
    backends = list(data)
    series = {
        "relay (outbox -> broker)": [data[b]["relay"] for b in backends],
        "raw client, confirmed publish": [data[b]["raw"] for b in backends],
    }
    _bars(ax, [BACKEND_NAMES[b] for b in backends], series, "events/s")
    ax.set_title("Relay throughput")
    return fig


def _e2e(data: dict[str, dict[str, Any]]) -> Any:
    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 4), squeeze=False)
    for ax, (backend, f) in zip(axes[0], data.items(), strict=True):
        rates = sorted(f["rates"])
        for q, style in (("p50", "-o"), ("p95", "--o"), ("p99", ":o")):
            ax.plot(rates, [f["rates"][r][q] for r in rates], style, label=f"PATCH -> tenure, {q}")
        ax.plot(
            rates,
            [f["raw"][r]["p99"] for r in rates],
            "-x",
            color="grey",
            label="raw round trip, p99",
        )
        ax.set_yscale("log")
        ax.set_xlabel("updates/s (open loop)")
        ax.set_ylabel("ms")
        ax.set_title(BACKEND_NAMES[backend])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("End-to-end latency, tidings up")
    return fig


def _why(data: dict[str, dict[str, Any]]) -> Any:
    f = data["sqlite"]
    widths = sorted(f["events"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        widths, [f["sync"][w]["p50"] for w in widths], "-o", label="dependents called over HTTP"
    )
    ax.plot(widths, [f["events"][w]["p50"] for w in widths], "-o", label="tidings outbox (events)")
    ax.axhline(f["plain"]["p50"], color="grey", linestyle="--", label="plain write, no events")
    ax.set_xlabel("dependents (subscriptions)")
    ax.set_ylabel("PATCH p50, ms")
    ax.set_title("Why events: what the user waits for")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _fan_out(data: dict[str, dict[int, dict[str, float]]]) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    for backend, f in data.items():
        widths = sorted(f)
        left.plot(
            widths, [f[w]["publish_per_s"] for w in widths], "-o", label=BACKEND_NAMES[backend]
        )
        right.plot(
            widths, [f[w]["delivered_per_s"] for w in widths], "-o", label=BACKEND_NAMES[backend]
        )
    left.set_title("publish, events/s")
    right.set_title("delivered, events/s (all listeners)")
    for ax in (left, right):
        ax.set_xlabel("subscriptions of the topic")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _scaling(data: dict[str, dict[str, Any]]) -> Any:
    f = data["sqlite"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    procs = sorted(f["processes"])
    left.plot(procs, [f["processes"][p] for p in procs], "-o", label="measured")
    left.plot(
        procs,
        [p * f["in_flight_per_process"] * 100 for p in procs],
        "--",
        color="grey",
        label="ceiling",
    )
    left.set_xlabel(f"processes (in-flight {f['in_flight_per_process']} each)")
    flights = sorted(f["in_flight"])
    right.plot(flights, [f["in_flight"][n] for n in flights], "-o", label="measured")
    right.plot(flights, [n * 100 for n in flights], "--", color="grey", label="ceiling")
    right.set_xlabel("in-flight, one process")
    for ax in (left, right):
        ax.set_ylabel("events/s (10 ms handler)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Horizontal scaling, I/O-bound handler")
    return fig


def _memory(data: dict[str, dict[str, Any]]) -> Any:
    f = data["sqlite"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s[0] for s in f["rss"]], [s[2] for s in f["rss"]], label="RSS, MB")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB")
    twin = ax.twinx()
    twin.plot(
        [s[0] for s in f["rss"]],
        [f["backlog"] - s[1] for s in f["rss"]],
        color="grey",
        linestyle="--",
        label="backlog left",
    )
    twin.set_ylabel("events left")
    ax.set_title(
        f"Listener memory while {f['backlog']:,} events drain (in-flight {f['in_flight']})"
    )
    ax.grid(alpha=0.3)
    return fig
