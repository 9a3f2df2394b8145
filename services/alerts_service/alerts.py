"""What the alerts endpoint subscribes to, and the alerts an event gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from housing_contracts import TENURE_TOPIC
from tidings.events import Event
from tidings.topology import Subscription

__all__ = ["SECRET_ENV", "SUBSCRIPTION", "WEBHOOK_PATH", "Alert", "alerts_for"]

SECRET_ENV = "TIDINGS_ALERTS_WEBHOOK_SECRET"
"""The variable holding the secret the dispatcher signs with and the endpoint verifies."""

WEBHOOK_PATH = "/webhooks/tidings"

SUBSCRIPTION = Subscription(
    name="alerts",
    topics=(TENURE_TOPIC,),
    event_types=("TenureUpdatedEvent", "PersonRemovedFromTenureEvent"),
    url=f"http://127.0.0.1:8004{WEBHOOK_PATH}",
    secret_env=SECRET_ENV,
    in_flight=8,
    max_attempts=12,
)
"""A push subscription: ``tidings up`` points it at the alerts API it starts."""


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    tenure_id: str
    person_id: str | None
    message: str


def alerts_for(event: Event) -> list[Alert]:
    """A tenure whose details changed gives one alert; each person removed from a tenure's
    household gives one. Other events give none."""
    tenure = event.entity_id
    old = event.event_data.old_data or {}
    new = event.event_data.new_data or {}
    if event.event_type == "TenureUpdatedEvent":
        fields = ", ".join(sorted(new)) or "nothing"
        return [Alert("tenure-updated", tenure, None, f"Tenure {tenure} changed: {fields}")]
    if event.event_type == "PersonRemovedFromTenureEvent":
        remaining = {m.get("id") for m in _members(new)}
        return [
            Alert(
                "person-removed",
                tenure,
                str(member.get("id")),
                f"{member.get('fullName') or member.get('id')} was removed from tenure {tenure}",
            )
            for member in _members(old)
            if member.get("id") not in remaining
        ]
    return []


def _members(data: dict[str, Any]) -> list[dict[str, Any]]:
    members = data.get("householdMembers")
    if not isinstance(members, list):
        return []
    return [m for m in members if isinstance(m, dict)]
