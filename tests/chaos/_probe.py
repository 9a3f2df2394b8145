"""How far behind the subsets run: one person, renamed again and again, and the time from
each rename's 204 to the moment the tenure listing them shows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from ._workload import TENURES, Client, Unit


@dataclass
class LagProbe:
    client: Client
    unit: Unit
    tenure: str
    timeout: float = 300.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(when the rename was accepted, seconds until the tenure showed it)."""

    def worst(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((lag for at, lag in self.samples if since <= at <= until), default=0.0)

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            write = await self.client.update_person(self.unit)
            if write is None:
                continue
            seen = await self.seen(self.unit, write.token)
            self.samples.append((write.at, seen - write.at))
            await asyncio.sleep(0.5)

    async def seen(
        self, unit: Unit, surname: str, clock: Callable[[], float] = time.monotonic
    ) -> float:
        """When (``clock``) the tenure of ``unit`` showed ``surname``; polled every 50 ms."""
        url = f"{self.tenure}{TENURES}/{unit.tenure_id}"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                r = await self.client.http.get(url)
                members = r.json()["householdMembers"] if r.status_code == 200 else []
            except (httpx.TransportError, ValueError):
                members = []
            if any(m["fullName"].endswith(f" {surname}") for m in members):
                return clock()
            await asyncio.sleep(0.05)
        raise AssertionError(f"{surname} never reached tenure {unit.tenure_id}")
