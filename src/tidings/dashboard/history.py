"""The dashboard's short memory: throughput and backlog of every subscription, sampled at a
fixed interval and kept in memory for a fixed window (lost when the process stops)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["History", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One subscription at one moment: events processed per second by its listeners, and
    what waits (ready, in flight, delayed; dead letters apart)."""

    at: datetime
    throughput: float
    backlog: int
    dead: int


class History:
    """The last ``window`` seconds of samples taken every ``interval`` seconds, per
    subscription. A subscription seen for the first time starts with an empty series; one
    no longer sampled keeps its points until they age out."""

    def __init__(self, *, interval: float = 2.0, window: float = 600.0) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("interval must be positive and window at least one interval")
        self.interval = interval
        self.window = window
        self._size = int(window // interval)
        self._series: dict[str, deque[Sample]] = {}

    def add(self, samples: Mapping[str, Sample]) -> None:
        """Append one sample per subscription."""
        for name, sample in samples.items():
            series = self._series.setdefault(name, deque(maxlen=self._size))
            series.append(sample)

    def series(self, name: str) -> list[Sample]:
        return list(self._series.get(name, ()))

    def as_json(self) -> dict[str, Any]:
        """``{"interval", "window", "subscriptions": {name: [{"at", "throughput",
        "backlog", "dead"}, ...]}}``, oldest point first."""
        return {
            "interval": self.interval,
            "window": self.window,
            "subscriptions": {
                name: [
                    {
                        "at": s.at.isoformat(),
                        "throughput": round(s.throughput, 3),
                        "backlog": s.backlog,
                        "dead": s.dead,
                    }
                    for s in series
                ]
                for name, series in sorted(self._series.items())
            },
        }
