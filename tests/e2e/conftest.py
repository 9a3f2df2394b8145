"""The reference deployment as a user runs it: ``tidings up`` in a temporary folder on free
ports, driven over real HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ..conftest import free_ports

T = TypeVar("T")


def free_base_port() -> int:
    """A base port for ``tidings up``: room for up to three copies of each API and the
    alerts API (12 ports), their metrics ports (base + 100 onwards) and the dashboard
    (base - 1)."""
    return free_ports(12, extra_offsets=(-1, 100))


@dataclass
class Deployment:
    home: Path
    process: subprocess.Popen[str]
    person: str
    tenure: str
    activity: str
    token: str
    output: list[str]
    backend: str = "sqlite"
    broker_url: str = ""
    reader: threading.Thread | None = None
    """Reads what the deployment prints into :attr:`output` while it runs: its processes
    share one pipe with ``tidings up``, and a full pipe would stop each of them at its next
    log line."""

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}", **extra}


def start(home: Path, *extra: str) -> Deployment:
    base = free_base_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TIDINGS_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "up",
            "--home",
            str(home),
            "--base-port",
            str(base),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        output.append(line)
        if "tidings is up" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        process.wait()
        process.stdout.close()
        pytest.fail("tidings up exited early:\n" + "".join(output))
    if not any("tidings is up" in line for line in output):
        process.kill()
        process.wait()
        process.stdout.close()
        pytest.fail("tidings up did not come up:\n" + "".join(output))
    token = (home / "dev-token").read_text().strip()
    stdout = process.stdout
    reader = threading.Thread(target=lambda: output.extend(stdout), daemon=True)
    reader.start()
    return Deployment(
        home=home,
        process=process,
        person=f"http://127.0.0.1:{base}",
        tenure=f"http://127.0.0.1:{base + 1}",
        activity=f"http://127.0.0.1:{base + 2}",
        token=token,
        output=output,
        reader=reader,
    )


def stop(deployment: Deployment, timeout: float = 30) -> int:
    """Stop the deployment as Ctrl-C does and return its exit status. Raises
    :class:`subprocess.TimeoutExpired` (after a SIGKILL) when it takes longer than
    ``timeout``."""
    process = deployment.process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        if deployment.reader is not None:
            deployment.reader.join(timeout)
        if process.stdout is not None:
            process.stdout.close()
    return process.returncode


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

BACKENDS = {
    "sqlite": (),
    "amqp": (pytest.mark.rabbitmq, pytest.mark.postgres),
    "nats": (pytest.mark.nats, pytest.mark.postgres),
}
"""Where the module-wide deployment runs: the embedded default, and each real broker with
every domain on PostgreSQL."""


def backend_args(backend: str, prefix: str) -> list[str]:
    """The ``tidings up`` options that put a deployment on ``backend``, its names prefixed."""
    from ..conftest import require_service

    if backend == "sqlite":
        return []
    require_service("PostgreSQL", "127.0.0.1", 5432)
    database = ["--database-url", f"{PG_URL}?schema={prefix}"]
    namespace = prefix.replace("_", "-")
    if backend == "amqp":
        require_service("RabbitMQ", "127.0.0.1", 5672)
        return ["--broker", f"amqp://guest:guest@127.0.0.1:5672/?namespace={namespace}", *database]
    require_service("NATS", "127.0.0.1", 4222)
    return ["--broker", f"nats://127.0.0.1:4222/?namespace={namespace}", *database]


def drop_schemas(prefix: str) -> None:
    """Drop the domain schemas a deployment made with ``?schema=prefix``."""
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-q",
            "-c",
            "; ".join(
                f'DROP SCHEMA IF EXISTS "{prefix}_{d}" CASCADE'
                for d in ("person", "tenure", "activity", "alerts", "tidings")
            ),
        ],
        check=False,
        capture_output=True,
        timeout=60,
    )


def clean_up(backend: str, prefix: str, args: list[str]) -> None:
    """Drop what a deployment on a shared server left: schemas and broker names."""
    if backend == "sqlite":
        return
    drop_schemas(prefix)
    broker_url = args[args.index("--broker") + 1]

    async def forget() -> None:
        from tidings.brokers import connect

        broker: Any = await connect(broker_url)
        try:
            if hasattr(broker, "delete_namespace"):
                await broker.delete_namespace()
        finally:
            await broker.close()

    asyncio.run(forget())


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=marks, id=name) for name, marks in BACKENDS.items()],
)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    prefix = f"e2e_{uuid.uuid4().hex[:10]}"
    args = backend_args(request.param, prefix)
    running = start(tmp_path_factory.mktemp("up") / ".tidings", *args)
    running.backend = request.param
    running.broker_url = (
        args[args.index("--broker") + 1]
        if "--broker" in args
        else f"sqlite:///{running.home}/broker.db"
    )
    try:
        yield running
    finally:
        if running.process.poll() is None:
            stop(running)
        clean_up(request.param, prefix, args)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 15.0
) -> T:
    """Poll ``probe`` until ``check`` holds on its result; fail with the last result."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


def person_body(**overrides: Any) -> dict[str, Any]:
    return {
        "title": "Ms",
        "firstName": "Ann",
        "surname": "Smyth",
        "dateOfBirth": "1980-02-01",
        "placeOfBirth": "Hackney",
        "personTypes": ["Tenant"],
        **overrides,
    }


def tenure_body(*members: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "paymentReference": "PR-1",
        "startOfTenureDate": "2020-01-01",
        "tenureType": {"code": "SEC", "description": "Secure"},
        "tenuredAsset": {
            "id": "asset-1",
            "type": "Dwelling",
            "fullAddress": "1 High St",
            "uprn": "100",
            "propertyReference": "P1",
        },
        "householdMembers": list(members),
        **overrides,
    }


def member(person_id: str, full_name: str, dob: str = "1980-02-01", **kw: Any) -> dict[str, Any]:
    return {
        "id": person_id,
        "fullName": full_name,
        "dateOfBirth": dob,
        "isResponsible": True,
        "personTenureType": "Tenant",
        **kw,
    }
