"""A RabbitMQ node of a test's own, beside the system one: started with Debian's
``rabbitmq-server`` script, stopped gracefully (``rabbitmqctl stop``) or with SIGKILL, and
started again on the same data folder.

Everything the node reads or writes is under the test's folder: its data (``MNESIA_BASE``),
logs, config, an empty plugins file (no management plugin) and an empty ``rabbitmq-env.conf``
(the system one names the system node). ``HOME`` is the folder too, so the node and
``rabbitmqctl`` share an Erlang cookie of their own. The node registers its unique name with
the system's epmd, which nodes share.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..conftest import free_ports

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 120.0


def free_port() -> int:
    """A free TCP port outside the ephemeral range, below 50,000 (``rabbitmqctl`` uses the
    distribution port + 10000)."""
    return free_ports()


def available() -> str | None:
    """Why a node cannot be started here, or None."""
    if not (SCRIPTS / "rabbitmq-server").exists():
        return f"{SCRIPTS / 'rabbitmq-server'} is not installed"
    return None


@dataclass
class RabbitNode:
    folder: Path
    name: str = field(default_factory=lambda: f"tidings-test-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def url(self, namespace: str = "", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"namespace": namespace, **options}.items() if v)
        return f"amqp://guest:guest@127.0.0.1:{self.port}/" + (f"?{query}" if query else "")

    @property
    def env(self) -> dict[str, str]:
        for sub in ("home", "mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").touch()
        (self.folder / "rabbitmq-env.conf").touch()
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        )
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
        }

    def start(self) -> None:
        """Start the node (on the data it had, if any) and wait until it takes connections."""
        self.starts += 1
        environment = self.env
        log = open(self.folder / f"start-{self.starts}.out", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(SCRIPTS / "rabbitmq-server")],
            cwd=self.folder,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = (self.folder / f"start-{self.starts}.out").read_text(errors="replace")
                raise RuntimeError(f"rabbitmq-server exited:\n{output[-3000:]}")
            if self._accepts():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"RabbitMQ node {self.name} did not start in {START_TIMEOUT} s")

    def _accepts(self) -> bool:
        """The node takes AMQP connections: it opens its listener last, once booted. (Asking
        ``rabbitmqctl await_startup`` instead starts an Erlang VM per try, which on a busy
        machine takes longer than the node itself.)"""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _ctl(self, *args: str, timeout: float = 30) -> int:
        command = [str(SCRIPTS / "rabbitmqctl"), "-n", self.name, *args]
        try:
            done = subprocess.run(command, env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return -1
        return done.returncode

    def stop(self) -> None:
        """A graceful stop: RabbitMQ closes its connections and syncs its data."""
        if self.process is None:
            return
        self._ctl("stop")
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """A crash: SIGKILL to the node's whole process group (beam and its helpers)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self.process = None
