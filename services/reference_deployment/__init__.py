"""The reference deployment: Person, Tenure and Activity services kept in step by events,
and an Alerts endpoint the push dispatcher delivers tenure events to.
This package is the deployment's composition root: the one place that knows every
service, their topics and subscriptions, and the processes ``tidings up`` starts."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from activity_service.listener import SUBSCRIPTION as ACTIVITY
from alerts_service.alerts import SUBSCRIPTION as ALERTS
from alerts_service.alerts import WEBHOOK_PATH
from housing_contracts import PERSON_TOPIC, TENURE_TOPIC
from housing_contracts import catalog as CATALOG
from person_service.listener import SUBSCRIPTION as PERSON
from person_service.reconcile import PersonTenures
from tenure_service.listener import SUBSCRIPTION as TENURE
from tenure_service.reconcile import HouseholdMembers
from tidings.subsets import Subset
from tidings.supervisor import ProcessSpec
from tidings.topology import Topology

__all__ = ["CATALOG", "METRICS_OFFSET", "PORTS", "SUBSETS", "TOPOLOGY", "processes"]

TOPOLOGY = Topology.build([PERSON_TOPIC, TENURE_TOPIC], [TENURE, PERSON, ACTIVITY, ALERTS])

PORTS = {"person": 8001, "tenure": 8002, "activity": 8003, "alerts": 8004}

DOMAINS = ("person", "tenure", "activity")
"""The domains with an API and a listener each; ``alerts`` is a receiver the push
dispatcher delivers to."""

SUBSETS: Mapping[str, Subset] = {s.name: s for s in (HouseholdMembers(), PersonTenures())}
"""The subsets ``tidings reconcile`` knows, by name: copies of Person records in the Tenure
database, and of Tenure records in the Person database."""

METRICS_OFFSET = 100
"""A listener serves ``/metrics`` on its domain API's port plus this (8101 for person)."""


def processes(
    host: str,
    ports: Mapping[str, int],
    instances: int = 1,
    scale: Mapping[str, int] | None = None,
) -> list[ProcessSpec]:
    """Every process of the deployment: ``instances`` copies of each domain's API and
    listener, or as many as ``scale`` says for a role (``{"tenure-listener": 3}``). Copy ``k``
    of a domain's API listens on its port plus ``k * len(ports)``, and copy ``k`` of its
    listener serves metrics on that port plus :data:`METRICS_OFFSET`. Listeners re-read
    sources through any copy of the source API (the next one when a copy is down). One
    alerts API and one push dispatcher (pushing to that API; metrics on the alerts port
    plus :data:`METRICS_OFFSET`) come last. An unknown role in ``scale`` raises
    ValueError."""
    domains = [domain for domain in ports if domain in DOMAINS]
    roles = [f"{domain}-{part}" for domain in domains for part in ("api", "listener")]
    unknown = set(scale or {}) - set(roles)
    if unknown:
        raise ValueError(f"unknown process {sorted(unknown)[0]!r}; known: {', '.join(roles)}")
    counts = {role: (scale or {}).get(role, instances) for role in roles}
    copies = {
        domain: ",".join(
            f"http://{host}:{port + k * len(ports)}" for k in range(counts.get(f"{domain}-api", 1))
        )
        for domain, port in ports.items()
    }
    env = {
        "TIDINGS_PERSON_API_URL": copies["person"],
        "TIDINGS_TENURE_API_URL": copies["tenure"],
    }
    specs = []
    for k in range(max(counts.values())):
        for domain, port in ports.items():
            if domain not in DOMAINS:
                continue
            module = f"{domain}_service"
            api_port = port + k * len(ports)
            for part in ("api", "listener"):
                role = f"{domain}-{part}"
                if k >= counts[role]:
                    continue
                name = f"{role}-{k + 1}" if counts[role] > 1 else role
                if part == "api":
                    argv = ["api", "--host", host, "--port", str(api_port)]
                    specs.append(
                        ProcessSpec(
                            name=name,
                            argv=[sys.executable, "-m", module, *argv],
                            env=env,
                            url=f"http://{host}:{api_port}",
                        )
                    )
                else:
                    metrics = {"TIDINGS_METRICS_PORT": str(api_port + METRICS_OFFSET)}
                    specs.append(
                        ProcessSpec(
                            name=name,
                            argv=[sys.executable, "-m", module, "listener"],
                            env={**env, **metrics},
                        )
                    )
    if "alerts" in ports:
        specs.extend(_alerts(host, ports["alerts"]))
    return specs


def _alerts(host: str, port: int) -> list[ProcessSpec]:
    """The alerts API and the push dispatcher that delivers to it."""
    url = f"http://{host}:{port}"
    argv = ["push", "--url", f"{ALERTS.name}={url}{WEBHOOK_PATH}"]
    return [
        ProcessSpec(
            name="alerts-api",
            argv=[sys.executable, "-m", "alerts_service", "api", "--host", host]
            + ["--port", str(port)],
            url=url,
        ),
        ProcessSpec(
            name="push-dispatcher",
            argv=[sys.executable, "-m", "tidings.cli", *argv],
            env={"TIDINGS_METRICS_PORT": str(port + METRICS_OFFSET)},
        ),
    ]
