"""Tokens an attacker would try, against the reference deployment's real APIs: every forged,
stale, misplaced or mis-addressed token is a 401 with a bearer challenge on every endpoint,
and a valid token without a write group is a 403 on every write, with nothing written.

(tests/unit/test_web_auth.py proves the same rules on a bare app; this suite proves every
service wires them, with the audience configured as a deployment would.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from tidings.web import AuthSettings

from ..e2e.conftest import member, person_body, tenure_body
from .conftest import AUDIENCE, SECRET, WRITERS, Apis

PERSON = "/api/v1/persons"
TENURE = "/api/v1/tenures"
ACTIVITY = "/api/v1/activityhistory"

READS = [
    ("person", f"{PERSON}/00000000-0000-0000-0000-000000000001"),
    ("tenure", f"{TENURE}/00000000-0000-0000-0000-000000000001"),
    ("activity", f"{ACTIVITY}?targetId=00000000-0000-0000-0000-000000000001"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "u-1", "iat": now, "exp": now + 600, "aud": AUDIENCE, "groups": [WRITERS]}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A compact JWS; ``key`` None leaves the signature empty (the ``alg: none`` form)."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    if key is None:
        return f"{head}.{body}."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    mac = hmac.new(key, f"{head}.{body}".encode(), digest[header["alg"]]).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _hs256(**changes: Any) -> str:
    return _sign({"alg": "HS256", "typ": "JWT"}, _claims(**changes), SECRET.encode())


def _tampered() -> str:
    """A valid token whose claims were swapped for other ones, signature kept."""
    head, _, signature = _hs256(groups=[]).split(".")
    body = _b64(json.dumps(_claims(groups=[WRITERS, "admins"])).encode())
    return f"{head}.{body}.{signature}"


FORGED = {
    "expired": lambda: _hs256(exp=int(time.time()) - 5),
    "not-yet-valid": lambda: _hs256(nbf=int(time.time()) + 600),
    "issued-expired": lambda: _hs256(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "wrong-signature": lambda: _sign({"alg": "HS256"}, _claims(), b"another-secret-" + b"x" * 40),
    "tampered-claims": _tampered,
    "alg-none": lambda: _sign({"alg": "none", "typ": "JWT"}, _claims(), None),
    "alg-None": lambda: _sign({"alg": "None"}, _claims(), None),
    "alg-NONE": lambda: _sign({"alg": "NONE"}, _claims(), None),
    "alg-none-with-signature": lambda: _sign({"alg": "none"}, _claims(), None) + "c2ln",
    "alg-HS512-same-secret": lambda: _sign({"alg": "HS512"}, _claims(), SECRET.encode()),
    "empty-key": lambda: _sign({"alg": "HS256"}, _claims(), b""),
    "wrong-audience": lambda: _hs256(aud="another-api"),
    "no-audience": lambda: _hs256(aud=None),
    "audience-list-without-ours": lambda: _hs256(aud=["a", "b"]),
    "no-exp": lambda: _hs256(exp=None),
    "no-sub": lambda: _hs256(sub=None),
    "garbage": lambda: "eyJhbGciOiJIUzI1NiJ9.garbage.garbage",
}


def _assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


@pytest.mark.parametrize("forgery", sorted(FORGED))
async def test_forged_or_stale_tokens_are_401_on_every_api(apis: Apis, forgery: str) -> None:
    token = FORGED[forgery]()
    headers = {"Authorization": f"Bearer {token}"}
    for api, path in READS:
        _assert_401(await apis.clients[api].get(path, headers=headers))
    _assert_401(await apis.clients["person"].post(PERSON, json=person_body(), headers=headers))
    _assert_401(await apis.clients["tenure"].post(TENURE, json=tenure_body(), headers=headers))


def test_the_forgeries_differ_from_a_valid_token_only_in_what_they_test() -> None:
    """The forged tokens are refused for the reason named, not for a slip in how they are
    made: the same construction with nothing wrong is accepted."""
    from tidings.web import verify_token

    settings = AuthSettings(secret=SECRET, audience=AUDIENCE, write_groups=frozenset({WRITERS}))
    assert verify_token(_hs256(), settings).groups == {WRITERS}


@pytest.mark.parametrize(
    ("where", "place"),
    [
        ("token-scheme", lambda t: ({"Authorization": f"Token {t}"}, {})),
        ("jwt-scheme", lambda t: ({"Authorization": f"JWT {t}"}, {})),
        ("basic-scheme", lambda t: ({"Authorization": f"Basic {t}"}, {})),
        ("bare-token", lambda t: ({"Authorization": t}, {})),
        ("x-token", lambda t: ({"X-Token": t}, {})),
        ("x-access-token", lambda t: ({"X-Access-Token": t}, {})),
        ("x-auth-token", lambda t: ({"X-Auth-Token": f"Bearer {t}"}, {})),
        ("proxy-authorization", lambda t: ({"Proxy-Authorization": f"Bearer {t}"}, {})),
        ("cookie", lambda t: ({"Cookie": f"access_token={t}; token={t}"}, {})),
        ("query-access-token", lambda t: ({}, {"access_token": t})),
        ("query-token", lambda t: ({}, {"token": t, "jwt": t})),
    ],
)
async def test_a_valid_token_in_the_wrong_place_is_401(apis: Apis, where: str, place: Any) -> None:
    headers, params = place(apis.token())
    for api, path in READS:
        _assert_401(await apis.clients[api].get(path, headers=headers, params=params))
    r = await apis.clients["person"].post(
        PERSON, json=person_body(), headers=headers, params=params
    )
    _assert_401(r)


async def test_audience_comes_from_the_environment(apis: Apis) -> None:
    settings = AuthSettings.from_env(
        {"TIDINGS_JWT_SECRET": SECRET, "TIDINGS_JWT_AUDIENCE": AUDIENCE}
    )
    assert settings.audience == AUDIENCE
    assert apis.auth.audience == AUDIENCE


async def test_valid_token_without_a_write_group_is_403_on_every_write(apis: Apis) -> None:
    person, tenure = apis.clients["person"], apis.clients["tenure"]
    writer = apis.bearer()
    created = await person.post(PERSON, json=person_body(), headers=writer)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    made = await tenure.post(TENURE, json=tenure_body(member(pid, "Ms Ann Smyth")), headers=writer)
    assert made.status_code == 201, made.text
    tid = made.json()["id"]

    for groups in ([], ["housing-readers"], [WRITERS.upper()], [WRITERS + " "]):
        reader = apis.bearer(groups)
        writes = [
            person.post(PERSON, json=person_body(), headers=reader),
            person.patch(f"{PERSON}/{pid}", json={"surname": "Evil"}, headers=reader),
            tenure.post(TENURE, json=tenure_body(), headers=reader),
            tenure.patch(f"{TENURE}/{tid}", json={"paymentReference": "X"}, headers=reader),
            tenure.patch(
                f"{TENURE}/{tid}/person/{pid}", json={"fullName": "Mallory"}, headers=reader
            ),
            tenure.delete(f"{TENURE}/{tid}/person/{pid}", headers=reader),
        ]
        for request in writes:
            response = await request
            assert response.status_code == 403, (groups, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        # reading stays allowed to any verified caller
        assert (await person.get(f"{PERSON}/{pid}", headers=reader)).status_code == 200

    person_now = (await person.get(f"{PERSON}/{pid}", headers=writer)).json()
    tenure_now = (await tenure.get(f"{TENURE}/{tid}", headers=writer)).json()
    assert person_now["surname"] == "Smyth"
    assert tenure_now["paymentReference"] == "PR-1"
    assert [m["fullName"] for m in tenure_now["householdMembers"]] == ["Ms Ann Smyth"]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b'{"firstName": 5}', b"[]"],
    ids=["malformed", "not-utf8", "wrong-types", "not-an-object"],
)
async def test_the_caller_is_checked_before_the_body_is_read(apis: Apis, body: bytes) -> None:
    """An unauthenticated caller cannot probe what the API would accept: whatever the body,
    no token is a 401 and a token without a write group a 403."""
    json_type = {"content-type": "application/json"}
    person, tenure = apis.clients["person"], apis.clients["tenure"]
    for client, path in ((person, PERSON), (tenure, TENURE)):
        for headers in ({}, {"Authorization": f"Bearer {FORGED['expired']()}"}):
            _assert_401(await client.post(path, content=body, headers={**json_type, **headers}))
        reader = {**json_type, **apis.bearer(groups=())}
        refused = await client.post(path, content=body, headers=reader)
        assert refused.status_code == 403, refused.text
    # with a writer's token the same bodies are judged, and refused as input
    answered = await person.post(PERSON, content=body, headers={**json_type, **apis.bearer()})
    assert answered.status_code == 400, answered.text
