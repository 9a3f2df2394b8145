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
