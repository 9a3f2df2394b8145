"""The dashboard that ``tidings up`` starts, over the reference deployment on the embedded
default: its access rules over HTTP, and the page in a real headless browser (Debian's
chromium driven by Playwright), hostile event data included."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from tidings.cli.up import WRITE_GROUP
from tidings.config import Settings
from tidings.control import ControlStore
from tidings.dashboard import OPERATOR_GROUP
from tidings.web import mint_token

from .conftest import Deployment, eventually, person_body, start, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTILE = "<img src=x onerror=window.__xss=1><b>Ann</b>"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "tests" / "artifacts" / "dashboard.png"
README_SCREENSHOT = ROOT / "docs" / "dashboard.png"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = start(tmp_path_factory.mktemp("dashboard") / ".tidings")
    deployment.broker_url = f"sqlite:///{deployment.home}/broker.db"
    try:
        yield deployment
    finally:
        if deployment.process.poll() is None:
            stop(deployment)


def dashboard_url(d: Deployment) -> str:
    """``tidings up`` serves the dashboard one port below the first API."""
    port = int(d.person.rsplit(":", 1)[1]) - 1
    url = f"http://127.0.0.1:{port}"
    assert any("dashboard" in line and url in line for line in d.output), "".join(d.output)
    return url


def chromium() -> str:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return str(CHROMIUM)


def reader_token(d: Deployment) -> str:
    secret = (d.home / "jwt-secret").read_text().strip()
    return mint_token(secret, subject="reader", groups=[WRITE_GROUP])


async def controls_paused(d: Deployment, subscription: str) -> bool:
    url = Settings(home=d.home, broker_url=d.broker_url).control_database_url
    async with ControlStore.open(url) as store:
        return (await store.controls(subscription)).paused


async def overview(http: httpx.AsyncClient, d: Deployment) -> dict[str, Any]:
    r = await http.get(f"{dashboard_url(d)}/api/overview", headers=d.headers())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in body["subscriptions"]}


def publish(d: Deployment, tmp_path: Path, event: dict[str, Any]) -> None:
    path = tmp_path / f"{event['id']}.json"
    path.write_text(json.dumps(event))
    result = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "publish", "--topic", "person"]
        + ["--file", str(path), "--broker", d.broker_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def poison(person_id: str, correlation_id: str) -> dict[str, Any]:
    """A person update from an outside publisher that breaks the event's schema (a date of
    birth that is no date), carrying the hostile name where the dashboard's one-line
    preview of the event data shows it."""
    return {
        "eventData": {
            "newData": {"firstName": HOSTILE, "dateOfBirth": "not a date"},
            "oldData": {"firstName": "Ann"},
        },
        "id": str(uuid.uuid4()),
        "eventType": "PersonUpdatedEvent",
        "sourceDomain": "Person",
        "sourceSystem": "PersonAPI",
        "version": "v1",
        "correlationId": correlation_id,
        "dateTime": "2024-05-01T10:00:00Z",
        "user": {"name": "Outside Publisher", "email": "publisher@example.org"},
        "entityId": person_id,
    }


async def test_reads_need_a_token_and_actions_need_the_operator_group(
    running: Deployment, http: httpx.AsyncClient
) -> None:
    d = running
    base = dashboard_url(d)
    anonymous = await http.get(f"{base}/api/overview")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"] == "Bearer"

    reader = d.headers(reader_token(d))
    assert (await http.get(f"{base}/api/overview", headers=reader)).status_code == 200
    sub = f"{base}/api/subscriptions/tenure-listener"
    for method, url in [
        ("POST", f"{sub}/pause"),
        ("POST", f"{sub}/resume"),
        ("POST", f"{sub}/redrive"),
        ("DELETE", f"{sub}/dead-letters"),
    ]:
        refused = await http.request(method, url, headers=reader, json={})
        assert refused.status_code == 403, (method, url, refused.text)
        assert refused.json()["detail"] == "the token has none of the operator groups"
        assert (await http.request(method, url, json={})).status_code == 401
    assert await controls_paused(d, "tenure-listener") is False

    operator = d.headers()
    assert OPERATOR_GROUP in _groups(d.token)
    missing = await http.post(f"{base}/api/subscriptions/no-such/pause", headers=operator)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def _groups(token: str) -> list[str]:
    import jwt

    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return list(claims["groups"])


async def test_page_runs_only_its_own_script(running: Deployment, http: httpx.AsyncClient) -> None:
    page = await http.get(f"{dashboard_url(running)}/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "default-src 'none'" in policy
    assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
    assert re.findall(r"\son[a-z]+\s*=", page.text) == []
    script = await http.get(f"{dashboard_url(running)}/static/dashboard.js")
    assert script.status_code == 200
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text


async def test_operator_sees_a_poison_event_with_hostile_data_redrives_it_and_traces_a_change(
    running: Deployment, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    executable = chromium()
    d = running
    created_cid = f"dashboard-{uuid.uuid4()}"
    r = await http.post(
        f"{d.person}/api/v1/persons",
        json=person_body(firstName=HOSTILE),
        headers=d.headers(**{"x-correlation-id": created_cid}),
    )
    assert r.status_code == 201, r.text
    person_id = r.json()["id"]
    for i in range(12):
        r = await http.post(
            f"{d.person}/api/v1/persons", json=person_body(surname=f"Smith{i}"), headers=d.headers()
        )
        assert r.status_code == 201, r.text
    publish(d, tmp_path, poison(person_id, f"poison-{uuid.uuid4()}"))
    await eventually(
        lambda: overview(http, d),
        lambda o: by_name(o)["tenure-listener"]["depth"]["dead"] == 1,
        timeout=30,
    )

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "console",
                lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
            )
            await operate(page, d, created_cid)
            assert problems == []
        finally:
            await browser.close()


async def operate(page: Page, d: Deployment, created_cid: str) -> None:
    await page.goto(dashboard_url(d) + "/")
    await page.fill("#token", d.token)
    await page.click("#login-form button[type=submit]")

    row = page.locator('tr[data-subscription="tenure-listener"]')
    await expect(row).to_be_visible()
    for name in ("activity-listener", "person-listener"):
        await expect(page.locator(f'tr[data-subscription="{name}"]')).to_be_visible()
    await expect(row.locator("td.dead")).to_have_text("1")
    await expect(row.locator("td.ready")).to_have_text("0")
    await expect(row.locator("td.state")).to_have_text("running")

    await page.select_option("#dead-subscription", "tenure-listener")
    letter = page.locator("#dead-letters tr[data-dead-letter-id]")
    await expect(letter).to_have_count(1)
    await expect(letter.locator("td.reason")).to_contain_text("newData.dateOfBirth")
    await expect(letter.locator("summary")).to_contain_text(HOSTILE)
    assert await page.evaluate("typeof window.__xss") == "undefined"
    assert await page.locator("img").count() == 0

    await page.fill("#correlation-id", created_cid)
    await page.click("#trace-form button[type=submit]")
    await expect(page.locator("#trace-title")).to_contain_text(created_cid)
    steps = page.locator("#trace tbody tr")
    published = steps.and_(page.locator('[data-outcome="published"]'))
    await expect(published).to_have_count(1, timeout=15_000)
    await expect(published).to_contain_text("PersonCreatedEvent")
    applied = steps.and_(page.locator('[data-outcome="applied"]'))
    await expect(applied.first).to_be_visible(timeout=15_000)

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    if os.environ.get("TIDINGS_UPDATE_SCREENSHOT") == "1":  # the README's picture, on demand
        shutil.copyfile(SCREENSHOT, README_SCREENSHOT)

    await row.locator('button[data-action="pause"]').click()
    # "paused" once the running listener reports that it follows the control
    await expect(row.locator("td.state")).to_have_text("paused", timeout=15_000)
    assert await controls_paused(d, "tenure-listener") is True

    # paused, the redriven event waits in the subscription instead of failing again at once
    await letter.locator('button[data-action="redrive"]').click()
    await expect(page.locator("#notice")).to_contain_text("1 dead letter redriven")
    await expect(row.locator("td.dead")).to_have_text("0")
    await expect(letter).to_have_count(0)
    await expect(page.locator("#no-dead-letters")).to_be_visible()

    await row.locator('button[data-action="resume"]').click()
    await expect(row.locator("td.state")).to_have_text("running", timeout=15_000)
    assert await controls_paused(d, "tenure-listener") is False
    # running again, the listener rejects the poison event once more
    await expect(row.locator("td.dead")).to_have_text("1", timeout=15_000)
    await expect(letter).to_have_count(1)
    assert await page.evaluate("typeof window.__xss") == "undefined"
