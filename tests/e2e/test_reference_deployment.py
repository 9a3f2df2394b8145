"""The reference deployment end to end: real processes, real HTTP, the embedded default."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tidings.web import mint_token

from .conftest import Deployment, eventually, member, person_body, start, stop, tenure_body

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def create_person(http: httpx.AsyncClient, d: Deployment, **fields: Any) -> str:
    r = await http.post(
        f"{d.person}/api/v1/persons", json=person_body(**fields), headers=d.headers()
    )
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/api/v1/persons/{r.json()['id']}"
    assert r.headers["ETag"] == '"1"'
    return str(r.json()["id"])


async def create_tenure(
    http: httpx.AsyncClient, d: Deployment, *members: dict[str, Any], **fields: Any
) -> str:
    r = await http.post(
        f"{d.tenure}/api/v1/tenures", json=tenure_body(*members, **fields), headers=d.headers()
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def get(http: httpx.AsyncClient, d: Deployment, url: str) -> dict[str, Any]:
    r = await http.get(url, headers=d.headers())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def members_of(tenure: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in tenure["householdMembers"]}


async def test_rename_and_birth_date_reach_every_tenure_of_the_person(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d)
    t1 = await create_tenure(http, d, member(pid, "Ms Ann Smyth"))
    t2 = await create_tenure(http, d, member(pid, "Ms Ann Smyth", isResponsible=False))
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(**{"If-Match": '"1"'}),
        json={"surname": "Smith", "dateOfBirth": "1981-03-04"},
    )
    assert r.status_code == 204 and r.headers["ETag"] == '"2"'
    for tid in (t1, t2):
        await eventually(
            lambda tid=tid: get(http, d, f"{d.tenure}/api/v1/tenures/{tid}"),
            lambda t: (
                members_of(t)[pid]["fullName"] == "Ms Ann Smith"
                and members_of(t)[pid]["dateOfBirth"] == "1981-03-04"
            ),
        )


async def test_member_added_with_a_wrong_name_is_corrected_and_person_lists_the_tenure(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d, firstName="Bob", surname="Jones", title="Mr")
    tid = await create_tenure(http, d)
    r = await http.patch(
        f"{d.tenure}/api/v1/tenures/{tid}/person/{pid}",
        headers=d.headers(),
        json={
            "fullName": "Robert Jonez",
            "dateOfBirth": "1999-09-09",
            "isResponsible": False,
            "personTenureType": "HouseholdMember",
        },
    )
    assert r.status_code == 204 and r.headers["ETag"] == '"2"'
    await eventually(
        lambda: get(http, d, f"{d.tenure}/api/v1/tenures/{tid}"),
        lambda t: (
            members_of(t)[pid]["fullName"] == "Mr Bob Jones"
            and members_of(t)[pid]["dateOfBirth"] == "1980-02-01"
        ),
    )
    person = await eventually(
        lambda: get(http, d, f"{d.person}/api/v1/persons/{pid}"),
        lambda p: [t["id"] for t in p["tenures"]] == [tid],
    )
    [summary] = person["tenures"]
    assert summary == {
        "id": tid,
        "type": "Secure",
        "startDate": "2020-01-01",
        "endDate": None,
        "assetFullAddress": "1 High St",
        "assetId": "asset-1",
        "uprn": "100",
        "paymentReference": "PR-1",
        "propertyReference": "P1",
        "isActive": True,
    }


async def test_member_removed_leaves_the_persons_tenures(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d)
    tid = await create_tenure(http, d, member(pid, "Ms Ann Smyth"))
    await eventually(
        lambda: get(http, d, f"{d.person}/api/v1/persons/{pid}"), lambda p: len(p["tenures"]) == 1
    )
    r = await http.delete(f"{d.tenure}/api/v1/tenures/{tid}/person/{pid}", headers=d.headers())
    assert r.status_code == 204 and r.headers["ETag"] == '"2"'
    await eventually(
        lambda: get(http, d, f"{d.person}/api/v1/persons/{pid}"), lambda p: p["tenures"] == []
    )
    r = await http.delete(f"{d.tenure}/api/v1/tenures/{tid}/person/{pid}", headers=d.headers())
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_ended_tenure_keeps_the_named_tenants_name_but_not_other_members(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    tenant = await create_person(http, d, firstName="Tia")
    other = await create_person(http, d, firstName="Oli")
    tid = await create_tenure(
        http, d, member(tenant, "Ms Tia Smyth"), member(other, "Ms Oli Smyth", isResponsible=False)
    )
    r = await http.patch(
        f"{d.tenure}/api/v1/tenures/{tid}",
        headers=d.headers(),
        json={"endOfTenureDate": "2021-06-30"},
    )
    assert r.status_code == 204
    await eventually(
        lambda: get(http, d, f"{d.person}/api/v1/persons/{tenant}"),
        lambda p: (
            p["tenures"]
            and p["tenures"][0]["endDate"] == "2021-06-30"
            and p["tenures"][0]["isActive"] is False
        ),
    )
    for pid in (tenant, other):
        r = await http.patch(
            f"{d.person}/api/v1/persons/{pid}", headers=d.headers(), json={"surname": "Married"}
        )
        assert r.status_code == 204
    tenure = await eventually(
        lambda: get(http, d, f"{d.tenure}/api/v1/tenures/{tid}"),
        lambda t: members_of(t)[other]["fullName"] == "Ms Oli Married",
    )
    assert members_of(tenure)[tenant]["fullName"] == "Ms Tia Smyth"


async def test_no_op_patch_publishes_nothing_and_history_records_each_change_once(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d)
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(),
        json={"firstName": "Ann", "surname": "Smyth"},
    )
    assert r.status_code == 204 and r.headers["ETag"] == '"1"'
    cid = f"e2e-{uuid.uuid4()}"
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(**{"x-correlation-id": cid}),
        json={"firstName": "Di"},
    )
    assert r.status_code == 204 and r.headers["x-correlation-id"] == cid
    history = await eventually(
        lambda: get(http, d, f"{d.activity}/api/v1/activityhistory?targetId={pid}"),
        lambda h: len(h["results"]) >= 2,
    )
    kinds = [(a["type"], a["eventType"]) for a in history["results"]]
    assert kinds == [("update", "PersonUpdatedEvent"), ("create", "PersonCreatedEvent")]
    update = history["results"][0]
    assert update["correlationId"] == cid
    assert update["oldData"] == {"firstName": "Ann", "fullName": "Ms Ann Smyth"}
    assert update["newData"] == {"firstName": "Di", "fullName": "Ms Di Smyth"}
    assert update["authorDetails"] == {"fullName": "Developer", "email": "developer@localhost"}


async def test_activity_history_pages_with_a_cursor(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d)
    for i in range(4):
        r = await http.patch(
            f"{d.person}/api/v1/persons/{pid}", headers=d.headers(), json={"middleName": f"M{i}"}
        )
        assert r.status_code == 204
    url = f"{d.activity}/api/v1/activityhistory?targetId={pid}&pageSize=2"
    await eventually(
        lambda: get(http, d, url.replace("pageSize=2", "pageSize=10")),
        lambda h: len(h["results"]) == 5,
    )
    seen: list[str] = []
    token: str | None = None
    while True:
        page = await get(http, d, url + (f"&paginationToken={token}" if token else ""))
        seen += [a["id"] for a in page["results"]]
        token = page["paginationDetails"]["nextToken"]
        if token is None:
            break
    assert len(seen) == 5 == len(set(seen))
    r = await http.get(url + "&paginationToken=garbage!", headers=d.headers())
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "paginationToken"


async def test_stale_if_match_is_refused_with_412(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d)
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}", headers=d.headers(), json={"firstName": "Eve"}
    )
    assert r.headers["ETag"] == '"2"'
    r = await http.patch(
        f"{d.person}/api/v1/persons/{pid}",
        headers=d.headers(**{"If-Match": '"1"'}),
        json={"firstName": "Zoe"},
    )
    assert r.status_code == 412
    person = await get(http, d, f"{d.person}/api/v1/persons/{pid}")
    assert person["firstName"] == "Eve" and person["versionNumber"] == 2


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/persons", {"surname": "X"}, "firstName"),
        ("/api/v1/persons", person_body(dateOfBirth="2999-01-01"), "dateOfBirth"),
        ("/api/v1/persons", person_body(title="Lord"), "title"),
        ("/api/v1/tenures", tenure_body(tenuredAsset={"fullAddress": "x"}), "tenuredAsset.id"),
        ("/api/v1/tenures", tenure_body(startOfTenureDate="2020-13-01"), "startOfTenureDate"),
    ],
)
async def test_bad_input_is_a_problem_naming_the_field(
    deployment: Deployment, http: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    d = deployment
    base = d.person if "persons" in path else d.tenure
    r = await http.post(base + path, json=body, headers=d.headers())
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]]


async def test_missing_forged_and_unprivileged_tokens_are_refused(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    url = f"{d.person}/api/v1/persons"
    assert (await http.post(url, json=person_body())).status_code == 401
    forged = jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 60, "groups": ["tidings-writers"]},
        "not-the-secret-" * 4,
        algorithm="HS256",
    )
    assert (await http.post(url, json=person_body(), headers=d.headers(forged))).status_code == 401
    secret = (d.home / "jwt-secret").read_text().strip()
    reader = mint_token(secret, subject="reader", groups=["readers"])
    assert (await http.post(url, json=person_body(), headers=d.headers(reader))).status_code == 403
    pid = await create_person(http, d)
    r = await http.get(f"{url}/{pid}", headers=d.headers(reader))
    assert r.status_code == 200
    for service in (d.person, d.tenure, d.activity):
        assert (await http.get(f"{service}/health")).json()["status"] == "ok"


def test_ctrl_c_stops_every_process_cleanly(tmp_path: Path) -> None:
    running = start(tmp_path / ".tidings")
    assert (tmp_path / ".tidings" / "dev-token").exists()
    assert stop(running) == 0
    assert "stopped" in "".join(running.output)


async def test_council_event_without_version_is_applied_by_re_reading_the_source(
    deployment: Deployment, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    d = deployment
    pid = await create_person(http, d)
    tid = await create_tenure(http, d, member(pid, "Ms Ann Smyth"))
    council = {
        "id": str(uuid.uuid4()),
        "eventType": "PersonUpdatedEvent",
        "sourceDomain": "Person",
        "sourceSystem": "PersonAPI",
        "version": "v1",
        "correlationId": str(uuid.uuid4()),
        "dateTime": "2021-07-08T10:00:00.1234567Z",
        "user": {"name": "Council Publisher", "email": "publisher@example.org"},
        "entityId": pid,
        "eventData": {
            "oldData": {"fullName": "Ms Ann Smyth"},
            "newData": {"fullName": "Not What The Person API Says"},
        },
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(council))
    broker = d.broker_url
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "publish",
            "--topic",
            "person",
            "--file",
            str(path),
            "--broker",
            broker,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    history = await eventually(
        lambda: get(http, d, f"{d.activity}/api/v1/activityhistory?targetId={pid}"),
        lambda h: any(a["sourceEventId"] == council["id"] for a in h["results"]),
    )
    assert history["results"][0]["authorDetails"]["fullName"] == "Council Publisher"

    def depth() -> dict[str, int]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidings.cli",
                "depth",
                "tenure-listener",
                "--broker",
                broker,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        figures: dict[str, int] = json.loads(out)
        return figures

    async def settled() -> dict[str, int]:
        return depth()

    figures = await eventually(settled, lambda f: f["ready"] + f["in_flight"] + f["delayed"] == 0)
    assert figures["dead"] == 0
    tenure = await get(http, d, f"{d.tenure}/api/v1/tenures/{tid}")
    assert members_of(tenure)[pid]["fullName"] == "Ms Ann Smyth"


def test_publish_refuses_a_file_that_is_no_event(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text('{"hello": "world"}')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "publish",
            "--topic",
            "person",
            "--file",
            str(path),
            "--broker",
            f"sqlite:///{tmp_path}/broker.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "event.json" in result.stderr


async def test_two_instances_of_every_process_share_the_work_once(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    d = start(tmp_path / ".tidings", "--instances", "2")
    try:
        names = "".join(d.output)
        for name in ("person-api-2", "tenure-listener-2", "activity-listener-2"):
            assert name in names
        base = int(d.person.rsplit(":", 1)[1])
        second_person = f"http://127.0.0.1:{base + 4}"
        pid = await create_person(http, d)
        tid = await create_tenure(http, d, member(pid, "Ms Ann Smyth"))
        for i in range(10):
            url = (d.person if i % 2 else second_person) + f"/api/v1/persons/{pid}"
            r = await http.patch(url, headers=d.headers(), json={"middleName": f"V{i}"})
            assert r.status_code == 204
        await eventually(
            lambda: get(http, d, f"{d.tenure}/api/v1/tenures/{tid}"),
            lambda t: members_of(t)[pid]["fullName"] == "Ms Ann V9 Smyth",
        )
        history = await eventually(
            lambda: get(http, d, f"{d.activity}/api/v1/activityhistory?targetId={pid}&pageSize=50"),
            lambda h: len(h["results"]) >= 11,
        )
        await asyncio.sleep(1)
        history = await get(
            http, d, f"{d.activity}/api/v1/activityhistory?targetId={pid}&pageSize=50"
        )
        events = [a["sourceEventId"] for a in history["results"]]
        assert len(events) == 11 == len(set(events)), "an event was recorded twice or lost"
    finally:
        assert stop(d) == 0


async def test_apis_and_listeners_serve_metrics(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    d = deployment
    pid = await create_person(http, d)
    await create_tenure(http, d, member(pid, "Someone Else"))
    listener_metrics = d.tenure.rsplit(":", 1)[0] + f":{int(d.tenure.rsplit(':', 1)[1]) + 100}"

    async def applied() -> float:
        text = (await http.get(f"{listener_metrics}/metrics")).text
        for line in text.splitlines():
            if line.startswith("tidings_events_settled_total{") and "applied" in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    await eventually(applied, lambda n: n >= 1)
    api = (await http.get(f"{d.person}/metrics")).text
    published = [
        line
        for line in api.splitlines()
        if line.startswith('tidings_events_published_total{topic="person"}')
    ]
    assert published and float(published[0].rsplit(" ", 1)[1]) >= 1
