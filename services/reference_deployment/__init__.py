"""The reference deployment: Person, Tenure and Activity services kept in step by events.
This package is the deployment's composition root: the one place that knows every
service, their topics and subscriptions, and the processes ``tidings up`` starts."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from activity_service.listener import SUBSCRIPTION as ACTIVITY
from housing_contracts import PERSON_TOPIC, TENURE_TOPIC
from housing_contracts import catalog as CATALOG
from person_service.listener import SUBSCRIPTION as PERSON
from tenure_service.listener import SUBSCRIPTION as TENURE
from tidings.supervisor import ProcessSpec
from tidings.topology import Topology

__all__ = ["CATALOG", "METRICS_OFFSET", "PORTS", "TOPOLOGY", "processes"]

TOPOLOGY = Topology.build([PERSON_TOPIC, TENURE_TOPIC], [TENURE, PERSON, ACTIVITY])

PORTS = {"person": 8001, "tenure": 8002, "activity": 8003}

METRICS_OFFSET = 100
"""A listener serves ``/metrics`` on its domain API's port plus this (8101 for person)."""


def processes(host: str, ports: Mapping[str, int], instances: int = 1) -> list[ProcessSpec]:
    """Every process of the deployment: ``instances`` copies of each domain's API and
    listener. Copy ``k`` of a domain's API listens on its port plus ``k * len(ports)``, and
    its listener serves metrics on that port plus :data:`METRICS_OFFSET`; listeners re-read
    sources through copy 0."""
    urls = {domain: f"http://{host}:{port}" for domain, port in ports.items()}
    env = {"TIDINGS_PERSON_API_URL": urls["person"], "TIDINGS_TENURE_API_URL": urls["tenure"]}
    specs = []
    for k in range(instances):
        suffix = f"-{k + 1}" if instances > 1 else ""
        for domain, port in ports.items():
            module = f"{domain}_service"
            api_port = port + k * len(ports)
            specs.append(
                ProcessSpec(
                    name=f"{domain}-api{suffix}",
                    argv=[
                        sys.executable,
                        "-m",
                        module,
                        "api",
                        "--host",
                        host,
                        "--port",
                        str(api_port),
                    ],
                    env=env,
                    url=f"http://{host}:{api_port}",
                )
            )
            specs.append(
                ProcessSpec(
                    name=f"{domain}-listener{suffix}",
                    argv=[sys.executable, "-m", module, "listener"],
                    env={**env, "TIDINGS_METRICS_PORT": str(api_port + METRICS_OFFSET)},
                )
            )
    return specs
