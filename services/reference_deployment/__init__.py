"""The reference deployment: Person, Tenure and Activity services kept in step by events.
This package is the deployment's composition root: the one place that knows every
service, their topics and subscriptions, and the processes ``tidings up`` starts."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from activity_service.listener import SUBSCRIPTION as ACTIVITY
from housing_contracts import PERSON_TOPIC, TENURE_TOPIC
from person_service.listener import SUBSCRIPTION as PERSON
from tenure_service.listener import SUBSCRIPTION as TENURE
from tidings.supervisor import ProcessSpec
from tidings.topology import Topology

__all__ = ["PORTS", "TOPOLOGY", "processes"]

TOPOLOGY = Topology.build([PERSON_TOPIC, TENURE_TOPIC], [TENURE, PERSON, ACTIVITY])

PORTS = {"person": 8001, "tenure": 8002, "activity": 8003}


def processes(host: str, ports: Mapping[str, int]) -> list[ProcessSpec]:
    """Every process of the deployment: an API and a listener per domain."""
    urls = {domain: f"http://{host}:{port}" for domain, port in ports.items()}
    env = {"TIDINGS_PERSON_API_URL": urls["person"], "TIDINGS_TENURE_API_URL": urls["tenure"]}
    specs = []
    for domain in ("person", "tenure", "activity"):
        module = f"{domain}_service"
        specs.append(
            ProcessSpec(
                name=f"{domain}-api",
                argv=[
                    sys.executable,
                    "-m",
                    module,
                    "api",
                    "--host",
                    host,
                    "--port",
                    str(ports[domain]),
                ],
                env=env,
                url=urls[domain],
            )
        )
        specs.append(
            ProcessSpec(
                name=f"{domain}-listener",
                argv=[sys.executable, "-m", module, "listener"],
                env=env,
            )
        )
    return specs
