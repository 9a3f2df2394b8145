"""What a browser could be tricked into running: the dashboard's script never turns data into
markup, and every JSON answer (dashboard and domain APIs) says it is JSON and must not be
sniffed as anything else. (The same in a real browser, with a hostile person name:
tests/e2e/test_dashboard.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tidings.dashboard import OPERATOR_GROUP
from tidings.dashboard.app import STATIC
from tidings.dashboard.app import create_app as dashboard_app

from ..e2e.conftest import person_body
from .conftest import Apis

SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\b"
    r"|setTimeout\s*\(\s*['\"`]|setInterval\s*\(\s*['\"`]|\.setAttribute\(\s*['\"]on"
    r"|createContextualFragment|DOMParser|srcdoc"
)


def _code(path: Path) -> str:
    """The script without its comments, so that a comment naming a sink does not count."""
    text = path.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(?m)(^|[^:\\])//.*$", r"\1", text)


def test_the_dashboard_has_scripts_to_check() -> None:
    assert sorted(p.name for p in STATIC.glob("*.js")) == ["dashboard.js"]


@pytest.mark.parametrize("script", sorted(STATIC.glob("*.js")), ids=lambda p: p.name)
def test_dashboard_script_never_turns_data_into_markup(script: Path) -> None:
    code = _code(script)
    found = [m.group(0) for m in SINKS.finditer(code)]
    assert found == [], f"{script.name} uses HTML sinks: {found}"
    assert "textContent" in code, "data is expected to be written as text"


def test_the_sink_check_would_catch_a_sink() -> None:
    assert SINKS.search('row.innerHTML = "<b>" + name;')
    assert SINKS.search("el.insertAdjacentHTML('beforeend', x)")
    assert SINKS.search("document.write(x)")
    assert not SINKS.search("node.textContent = String(value);")


def test_the_page_runs_no_inline_script_or_handler() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html, re.I)
    assert not re.search(r"\son[a-z]+\s*=", html, re.I)


@pytest.fixture
async def dashboard(apis: Apis) -> AsyncIterator[httpx.AsyncClient]:
    app = dashboard_app(apis.settings, apis.auth, interval=60.0)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            yield client


def _assert_json(response: httpx.Response, kind: str = "application/json") -> None:
    assert response.headers["content-type"].split(";")[0] == kind, response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_dashboard_json_api_is_json_and_not_sniffed(
    apis: Apis, dashboard: httpx.AsyncClient
) -> None:
    operator = {"Authorization": f"Bearer {apis.token((OPERATOR_GROUP,))}"}
    for path in ("/api/overview", "/api/history", "/api/trace", "/api/trace/c-1"):
        response = await dashboard.get(path, headers=operator)
        assert response.status_code == 200, response.text
        _assert_json(response)
    refused = await dashboard.get("/api/overview")
    assert refused.status_code == 401
    _assert_json(refused, "application/problem+json")
    forbidden = await dashboard.post(
        "/api/subscriptions/person-listener/pause", headers=apis.bearer()
    )
    assert forbidden.status_code == 403
    _assert_json(forbidden, "application/problem+json")


async def test_domain_api_answers_are_json_and_not_sniffed(apis: Apis) -> None:
    person = apis.clients["person"]
    created = await person.post(
        "/api/v1/persons",
        json=person_body(firstName="<script>alert(1)</script>"),
        headers=apis.bearer(),
    )
    assert created.status_code == 201
    _assert_json(created)
    read = await person.get(f"/api/v1/persons/{created.json()['id']}", headers=apis.bearer())
    _assert_json(read)
    assert read.json()["firstName"] == "<script>alert(1)</script>"
    _assert_json(await person.get("/api/v1/persons/x"), "application/problem+json")
    bad = await person.post("/api/v1/persons", content=b"{", headers=apis.bearer())
    _assert_json(bad, "application/problem+json")
    history = await apis.clients["activity"].get(
        "/api/v1/activityhistory?targetId=x", headers=apis.bearer()
    )
    _assert_json(history)
