"""Runs a deployment's processes on one machine: starts them, restarts one that dies, and
stops them all cleanly (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

__all__ = ["ProcessSpec", "Supervisor"]

log = logging.getLogger("tidings.supervisor")


@dataclass(frozen=True)
class ProcessSpec:
    """One process: its command, extra environment and, for an API, its base URL (whose
    ``/health`` tells when it is ready)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None


class Supervisor:
    """Keeps ``specs`` running until :meth:`stop`. A process that exits on its own is
    restarted after ``restart_delay`` seconds; ``on_exit`` hears of each exit."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        env: Mapping[str, str],
        grace: float = 10.0,
        restart_delay: float = 1.0,
        on_exit: Callable[[ProcessSpec, int], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.env = {**os.environ, **env}
        self.grace = grace
        self.restart_delay = restart_delay
        self.on_exit = on_exit
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for spec in self.specs:
            await self._spawn(spec)
            self._watchers.append(asyncio.create_task(self._watch(spec)))

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Return when every API answers ``/health`` with 200; raise TimeoutError if not."""
        waiting = "every process"
        try:
            async with httpx.AsyncClient(timeout=2.0) as client, asyncio.timeout(timeout):
                for spec in self.specs:
                    waiting = spec.name
                    while spec.url is not None:
                        with contextlib.suppress(httpx.HTTPError):
                            if (await client.get(f"{spec.url}/health")).status_code == 200:
                                break
                        await asyncio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"{waiting} did not answer /health within {timeout:g}s") from None

    async def stop(self) -> None:
        self._stopping.set()
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), self.grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def _spawn(self, spec: ProcessSpec) -> None:
        self.procs[spec.name] = await asyncio.create_subprocess_exec(
            *spec.argv, env={**self.env, **spec.env}
        )

    async def _watch(self, spec: ProcessSpec) -> None:
        while True:
            code = await self.procs[spec.name].wait()
            if self._stopping.is_set():
                return
            log.warning("%s exited with %s; restarting", spec.name, code)
            if self.on_exit:
                self.on_exit(spec, code)
            await asyncio.sleep(self.restart_delay)
            if self._stopping.is_set():
                return
            await self._spawn(spec)
