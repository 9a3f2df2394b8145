"""Prometheus metrics of every tidings process, in the process's default registry.

APIs serve them at ``GET /metrics`` (see :func:`tidings.web.install`); a listener process
serves them on its own port (``TIDINGS_METRICS_PORT``, see :func:`serve_metrics`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "CONSUMED",
    "DEPTH",
    "HANDLER_SECONDS",
    "OUTBOX_LAG",
    "PUBLISHED",
    "SETTLED",
    "STALE_FIELDS",
    "serve_metrics",
]

PUBLISHED = Counter(
    "tidings_events_published", "Events the relay published (broker confirmed).", ["topic"]
)
CONSUMED = Counter(
    "tidings_events_consumed", "Deliveries a listener took from its subscription.", ["subscription"]
)
SETTLED = Counter(
    "tidings_events_settled",
    "Deliveries settled, by outcome: applied, duplicate, unhandled, retried, dead_lettered.",
    ["subscription", "outcome"],
)
STALE_FIELDS = Counter(
    "tidings_subset_stale_fields",
    "Subset fields an event did not write because the copy held a newer version.",
    ["subset"],
)
HANDLER_SECONDS = Histogram(
    "tidings_handler_seconds",
    "Time handlers took to apply an event (inside its transaction, commit excluded).",
    ["subscription", "event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_LAG = Gauge(
    "tidings_outbox_lag_seconds", "Age of the oldest unpublished outbox row (0 when none)."
)
DEPTH = Gauge(
    "tidings_subscription_depth",
    "What waits in a subscription, by state: ready, in_flight, delayed, dead.",
    ["subscription", "state"],
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``host:port`` from a background thread."""
    start_http_server(port, addr=host)
