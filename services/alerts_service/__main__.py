"""``python -m alerts_service api [--port 8004]``."""

from __future__ import annotations

from alerts_service.api import create_app
from tidings.runner import service_main

if __name__ == "__main__":
    service_main("alerts_service", api=create_app, port=8004)
