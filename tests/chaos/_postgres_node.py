"""A PostgreSQL cluster of a test's own, beside the machine's shared server: made with
``initdb`` in the test's folder, on a free port, and restarted by the test, as a crash
(``pg_ctl stop -m immediate``: no checkpoint, recovery from the WAL at the next start) or
gracefully.

PostgreSQL refuses to run as root, so when the test runs as root the cluster's commands
run as the ``postgres`` user (``runuser``), which then owns the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..conftest import free_ports

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> str | None:
    """Why a cluster cannot be made here, or None."""
    if not (BIN / "initdb").exists():
        return f"{BIN / 'initdb'} is not installed"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        return "running as root without runuser and a postgres user"
    return None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class PostgresNode:
    """The cluster lives in a folder of its own under the system's temporary folder (the
    ``postgres`` user cannot enter a test's private ``tmp_path``); :meth:`destroy` stops
    it and removes the folder."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tidings-pg-")))
    port: int = field(default_factory=free_ports)
    max_connections: int = 400

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, schema: str = "") -> str:
        query = f"?schema={schema}" if schema else ""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres{query}"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def create(self) -> None:
        """Make the cluster (trust on loopback) and start it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"max_connections = {self.max_connections}\n"
                f"unix_socket_directories = '{self.folder}'\n"
                "shared_buffers = 64MB\n"
            )
        self.start()

    def start(self) -> None:
        log = self.folder / "postgres.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def crash(self) -> None:
        """Stop at once, as a crash would: the next start recovers from the WAL."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        self.crash()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
