"""Secrets (bearer tokens, the signing secret, broker and database passwords) never appear in
logs, events, error bodies or the operator's error lines."""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tidings.brokers import connect
from tidings.brokers.urls import without_password
from tidings.cli import app as cli
from tidings.control.tables import trace_table
from tidings.db import create_engine
from tidings.errors import TidingsError
from tidings.outbox.table import outbox_table
from tidings.web import AuthSettings, mint_token

from ..conftest import free_ports
from ..e2e.conftest import member, person_body, tenure_body
from .conftest import AUDIENCE, SECRET, WRITERS, Apis, open_apis

PASSWORD = "Br0kerPassw0rd-7f3a"
DB_PASSWORD = "DbPassw0rd-91c2"


class Seen:
    """Everything an observer outside the process could read: response status lines,
    headers and bodies."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, response: httpx.Response) -> httpx.Response:
        self.parts.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response


def _secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


async def _rows(url: str, table: Any) -> str:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return repr((await conn.execute(select(table))).all())
    finally:
        await engine.dispose()


async def test_tokens_and_the_signing_secret_never_leave_the_process(
    apis: Apis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = Seen()
    person, tenure, activity = (apis.clients[n] for n in ("person", "tenure", "activity"))
    token = apis.token()
    reader = apis.token(groups=())
    expired = mint_token(SECRET, subject="u-1", audience=AUDIENCE, extra_claims={"exp": 1})
    other_audience = mint_token(SECRET, subject="u-1", audience="elsewhere", groups=[WRITERS])
    forged = mint_token("f" * 40, subject="u-1", audience=AUDIENCE, groups=[WRITERS])
    head, body, signature = token.split(".")
    tampered = f"{head}.{body}x.{signature}"
    secrets = {
        "signing secret": SECRET,
        "token": token,
        "token signature": signature,
        "reader token": reader,
        "expired token": expired,
        "other-audience token": other_audience,
        "forged token": forged,
        "tampered token": tampered,
    }
    auth = {"Authorization": f"Bearer {token}"}

    created = seen.add(await person.post("/api/v1/persons", json=person_body(), headers=auth))
    pid = created.json()["id"]
    made = seen.add(
        await tenure.post("/api/v1/tenures", json=tenure_body(member(pid, "Ann")), headers=auth)
    )
    tid = made.json()["id"]
    seen.add(
        await person.patch(
            f"/api/v1/persons/{pid}",
            json={"surname": "Smith"},
            headers={**auth, "If-Match": '"1"'},
        )
    )
    for bad in (expired, other_audience, forged, tampered, token + "=="):
        for client, path in (
            (person, f"/api/v1/persons/{pid}"),
            (tenure, f"/api/v1/tenures/{tid}"),
        ):
            r = seen.add(await client.get(path, headers={"Authorization": f"Bearer {bad}"}))
            assert r.status_code == 401
    for headers in ({"X-Token": token}, {"Authorization": f"Token {token}"}):
        assert (
            seen.add(await person.get(f"/api/v1/persons/{pid}", headers=headers)).status_code == 401
        )
    wrong_group = {"Authorization": f"Bearer {reader}"}
    r = seen.add(await person.post("/api/v1/persons", json=person_body(), headers=wrong_group))
    assert r.status_code == 403
    for request in (
        person.post("/api/v1/persons", content=b"{not json", headers=auth),
        person.post("/api/v1/persons", json={"firstName": 5}, headers=auth),
        person.patch(
            f"/api/v1/persons/{pid}", json={"surname": "X"}, headers={**auth, "If-Match": '"9"'}
        ),
        person.get(f"/api/v1/persons/{pid}", headers={**auth, "x-correlation-id": "bad id"}),
        tenure.patch(f"/api/v1/tenures/{tid}", json={"startOfTenureDate": "x"}, headers=auth),
        activity.get(
            "/api/v1/activityhistory",
            params={"targetId": pid, "paginationToken": token},
            headers=auth,
        ),
        activity.get(
            "/api/v1/activityhistory", params={"targetId": pid, "pageSize": 0}, headers=auth
        ),
    ):
        assert seen.add(await request).status_code >= 400

    responses = "\n".join(seen.parts)
    assert _secrets_in(responses, secrets) == []
    # what the services log; the test's own HTTP client logs the URLs it requests
    served = [r for r in caplog.records if not r.name.startswith("httpx")]
    logs = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in served)
    assert _secrets_in(logs, secrets) == []
    events = await _rows(apis.settings.domain_database_url("person"), outbox_table)
    events += await _rows(apis.settings.domain_database_url("tenure"), outbox_table)
    assert pid in events and tid in events
    assert _secrets_in(events, secrets) == []
    traced = await _rows(apis.settings.control_database_url, trace_table)
    assert _secrets_in(traced, secrets) == []


BROKERS = pytest.mark.parametrize(
    "url",
    [
        f"amqp://tidings:{PASSWORD}@127.0.0.1:{{port}}/",
        f"amqps://tidings:{PASSWORD}@127.0.0.1:{{port}}/?cafile=/nonexistent/ca.pem",
        f"nats://tidings:{PASSWORD}@127.0.0.1:{{port}}",
        f"tls://tidings:{PASSWORD}@127.0.0.1:{{port}}",
        f"amqp://tidings:{PASSWORD}@127.0.0.1:{{port}}/?unknown=1",
        f"nats://tidings:{PASSWORD}@127.0.0.1:{{port}}/?unknown=1",
        f"redis://tidings:{PASSWORD}@127.0.0.1:{{port}}",
    ],
    ids=["amqp", "amqps", "nats", "tls", "amqp-bad-option", "nats-bad-option", "unknown-scheme"],
)


@BROKERS
async def test_an_unreachable_or_misconfigured_broker_never_shows_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    url = url.format(port=free_ports())
    caplog.set_level(logging.DEBUG)
    with pytest.raises((TidingsError, OSError)) as refused:
        await connect(url)
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(refused.value)

    auth = AuthSettings(secret=SECRET, write_groups=frozenset({WRITERS}))
    with pytest.raises((TidingsError, OSError)) as api_refused:
        async with AsyncExitStack() as stack:
            await open_apis(stack, tmp_path, auth, broker_url=url)
    assert PASSWORD not in str(api_refused.value)
    assert PASSWORD not in caplog.text


@BROKERS
def test_cli_error_line_for_a_broker_never_shows_its_password(url: str) -> None:
    url = url.format(port=free_ports())
    result = CliRunner().invoke(cli, ["depth", "tenure-listener", "--broker", url])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("tidings: ") and "\n" not in line, result.output
    assert PASSWORD not in result.output
    assert "127.0.0.1" in line or "unknown option" in line


def test_an_unreachable_database_never_shows_its_password(tmp_path: Path) -> None:
    url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{free_ports()}/test"
    for args in (["subscriptions"], ["pause", "tenure-listener"], ["trace", "c-1"]):
        result = CliRunner().invoke(cli, [*args, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("tidings: ") and result.output.count("\n") == 1
        assert DB_PASSWORD not in result.output
        assert "postgres:***@127.0.0.1" in result.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:pw@h:5671/v", "amqp://u:***@h:5671/v"),
        ("amqps://u:p%40w@h/", "amqps://u:***@h/"),
        ("nats://u:pw@a:1,b:2?replicas=3", "nats://u:***@a:1,b:2?replicas=3"),
        ("tls://token@h:4222", "tls://token@h:4222"),
        ("sqlite:///x/broker.db", "sqlite:///x/broker.db"),
        ("memory://", "memory://"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert without_password(url) == shown


def test_settings_and_broker_options_print_no_password() -> None:
    """A ``repr`` in a log line or a traceback's locals shows where, never the password."""
    from tidings.brokers.nats.url import parse_url as nats_url
    from tidings.brokers.rabbitmq.url import parse_url as amqp_url
    from tidings.config import Settings

    settings = Settings.from_env(
        {
            "TIDINGS_BROKER": f"amqp://u:{PASSWORD}@h:5672/?namespace=n",
            "TIDINGS_DATABASE_URL": f"postgresql://u:{PASSWORD}@h/db",
        }
    )
    shown = [
        repr(settings),
        repr(amqp_url(f"amqp://u:{PASSWORD}@h:5672/?namespace=n")),
        repr(nats_url(f"nats://u:{PASSWORD}@h:4222")),
    ]
    for text in shown:
        assert PASSWORD not in text
    assert "amqp://u:***@h:5672/?namespace=n" in shown[0]
    assert "postgresql://u:***@h/db" in shown[0]
    assert "'amqp://h:5672/'" in shown[1] and "namespace='n'" in shown[1]


def test_a_running_clock_is_not_a_secret() -> None:
    """The tokens above are minted with the real clock; a token minted a second later is a
    different string, so no test here passes by an accident of equal tokens."""
    a = mint_token(SECRET, subject="u", extra_claims={"iat": int(time.time())})
    b = mint_token(SECRET, subject="u", extra_claims={"iat": int(time.time()) + 1})
    assert a != b
