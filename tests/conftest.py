"""What every test tier shares: reaching the services a marked test needs.

A test that needs a server calls :func:`require_service`. Where the server is unreachable
the test is skipped on a developer's machine, and fails under ``CI=true``: in CI a missing
service is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket

import pytest


def require_service(name: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


_SPAN = (15_000, 30_000)
"""Where test servers take their ports: below Linux's ephemeral range (32768-60999), so that
no outgoing connection can take a port while its server restarts."""


def free_ports(count: int = 1, *, extra_offsets: tuple[int, ...] = ()) -> int:
    """A port P such that P..P+count-1 (and P+o..P+o+count-1 for each offset) are free now,
    outside the ephemeral range."""
    import random

    spans = [0, *extra_offsets]
    for _ in range(500):
        base = random.randrange(_SPAN[0], _SPAN[1] - max(spans) - count)
        ports = [base + offset + i for offset in spans for i in range(count)]
        if all(_is_free(port) for port in ports):
            return base
    raise RuntimeError("no free ports")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
