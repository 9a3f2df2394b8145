"""The alerts endpoint of the reference deployment: tenure events pushed over HTTP by the
dispatcher ``tidings up`` starts, signed, shown at ``GET /api/v1/alerts`` (port 8004)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from .conftest import Deployment, eventually, member, person_body, tenure_body

pytestmark = pytest.mark.e2e


def alerts_url(d: Deployment) -> str:
    return f"http://127.0.0.1:{int(d.person.rsplit(':', 1)[1]) + 3}"


async def alerts_of(http: httpx.AsyncClient, d: Deployment, tenure: str) -> list[dict[str, Any]]:
    r = await http.get(
        f"{alerts_url(d)}/api/v1/alerts", params={"tenureId": tenure}, headers=d.headers()
    )
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


async def test_tenure_changes_reach_the_alerts_endpoint_once_each(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    ids = []
    for surname in ("Smith", "Jones"):
        r = await http.post(
            f"{d.person}/api/v1/persons", json=person_body(surname=surname), headers=d.headers()
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    ann, bob = ids
    body = tenure_body(member(ann, "Ms Ann Smith"), member(bob, "Mr Bob Jones"))
    r = await http.post(f"{d.tenure}/api/v1/tenures", json=body, headers=d.headers())
    assert r.status_code == 201, r.text
    tenure = r.json()["id"]
    r = await http.patch(
        f"{d.tenure}/api/v1/tenures/{tenure}",
        json={"paymentReference": "PR-2"},
        headers=d.headers(),
    )
    assert r.status_code == 204, r.text
    r = await http.delete(f"{d.tenure}/api/v1/tenures/{tenure}/person/{bob}", headers=d.headers())
    assert r.status_code == 204, r.text

    alerts = await eventually(
        lambda: alerts_of(http, d, tenure), lambda found: len(found) >= 2, timeout=30
    )
    kinds = sorted((a["kind"], a["personId"]) for a in alerts)
    assert kinds == [("person-removed", bob), ("tenure-updated", None)]
    removed = next(a for a in alerts if a["kind"] == "person-removed")
    assert "Jones was removed" in removed["message"]
    assert removed["eventType"] == "PersonRemovedFromTenureEvent"
    updated = next(a for a in alerts if a["kind"] == "tenure-updated")
    assert "paymentReference" in updated["message"]
    assert await alerts_of(http, d, tenure) == alerts, "an alert was recorded twice"


async def test_the_alerts_api_takes_the_same_tokens_and_only_signed_webhooks(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    r = await http.get(f"{alerts_url(d)}/api/v1/alerts")
    assert r.status_code == 401
    r = await http.get(f"{alerts_url(d)}/api/v1/alerts", headers=d.headers(token="not.a.token"))
    assert r.status_code == 401
    unsigned = await http.post(
        f"{alerts_url(d)}/webhooks/tidings",
        content=b'{"specversion":"1.0"}',
        headers={
            "content-type": "application/cloudevents+json",
            "webhook-id": "x",
            "webhook-timestamp": "1",
            "webhook-signature": "v1,AAAA",
        },
    )
    assert unsigned.status_code == 401


async def test_the_dispatcher_reports_like_any_listener(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    metrics = f"http://127.0.0.1:{int(d.person.rsplit(':', 1)[1]) + 3 + 100}/metrics"

    async def applied() -> float:
        text = (await http.get(metrics)).text
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("tidings_events_settled_total")
            and 'subscription="alerts"' in line
            and 'outcome="applied"' in line
        ]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    r = await http.post(f"{d.person}/api/v1/persons", json=person_body(), headers=d.headers())
    pid = r.json()["id"]
    body = tenure_body(member(pid, "Ms Ann Smyth"))
    tenure = (await http.post(f"{d.tenure}/api/v1/tenures", json=body, headers=d.headers())).json()
    before = await applied()
    r = await http.patch(
        f"{d.tenure}/api/v1/tenures/{tenure['id']}",
        json={"paymentReference": "PR-9"},
        headers=d.headers(),
    )
    assert r.status_code == 204
    await eventually(applied, lambda now: now >= before + 1, timeout=30)
    if d.backend != "sqlite":
        return  # the control store's database of the other backends is the fixture's own
    env = {**os.environ, "TIDINGS_HOME": str(d.home), "TIDINGS_BROKER": d.broker_url}
    env.pop("TIDINGS_DATABASE_URL", None)

    async def rows() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "tidings.cli", "subscriptions", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        return {row["name"]: row for row in json.loads(out.stdout)}

    found = await eventually(rows, lambda r: r.get("alerts", {}).get("listeners", 0) >= 1)
    assert found["alerts"]["topics"] == ["tenure"]
