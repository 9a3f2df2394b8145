"""NATS servers of a test's own: one, or a cluster on loopback, each with its store folder,
started and stopped (gracefully or with SIGKILL) by the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats

from ..conftest import free_ports

NATS_SERVER = "/usr/sbin/nats-server"


def free_port() -> int:
    return free_ports()


@dataclass
class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1; ``routes`` are the cluster ports of its peers."""

    folder: Path
    name: str = "n1"
    port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        store = self.folder / self.name
        store.mkdir(parents=True, exist_ok=True)
        command = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        command += ["-n", self.name, "-l", str(self.folder / f"{self.name}.log")]
        if self.cluster_port is not None:
            command += ["--cluster_name", "tidings", "--cluster"]
            command += [f"nats://127.0.0.1:{self.cluster_port}"]
            command += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.process.stderr!r}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not listen on {self.port}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: a graceful stop (JetStream syncs its files); SIGKILL: a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


def cluster(folder: Path, size: int = 3) -> list[NatsServer]:
    """``size`` servers routed to each other (not started)."""
    ports = [free_port() for _ in range(size)]
    return [
        NatsServer(
            folder,
            name=f"n{i + 1}",
            cluster_port=port,
            routes=[p for p in ports if p != port],
        )
        for i, port in enumerate(ports)
    ]


async def wait_for_jetstream(url: str, timeout: float = 30.0) -> None:
    """Until JetStream answers on ``url`` (in a cluster: once a meta leader is elected)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            reply = await nc.request("$JS.API.INFO", b"", timeout=1)
            if "error" not in json.loads(reply.data):
                return
            last = reply.data
        except Exception as exc:
            last = exc
        finally:
            await nc.close()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"JetStream on {url} not ready after {timeout}s: {last}")
