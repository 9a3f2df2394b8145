"""JWT bearer auth over HTTP: only verified tokens of the configured algorithm get in, and
writes need a write group."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from tidings.errors import ConfigurationError
from tidings.events import User
from tidings.web import AuthSettings, Reader, Writer, install, mint_token

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
Client = Callable[[AuthSettings], httpx.AsyncClient]


def demo_app(settings: AuthSettings) -> FastAPI:
    app = FastAPI()
    install(app, auth=settings, name="tenure-api")

    @app.get("/tenures/1")
    async def read(principal: Reader) -> dict[str, Any]:
        return {"name": principal.name, "email": principal.email, "user": principal.user.email}

    @app.post("/tenures", status_code=201)
    async def create(principal: Writer) -> dict[str, str]:
        return {"by": principal.subject}

    return app


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    opened: list[httpx.AsyncClient] = []

    def make(settings: AuthSettings) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=demo_app(settings))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
        return opened[-1]

    yield make
    for c in opened:
        await c.aclose()


@pytest.fixture(scope="module")
def rsa_pems() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def hs256(**kwargs: Any) -> AuthSettings:
    return AuthSettings(secret=SECRET, write_groups=frozenset({"tenure-writers"}), **kwargs)


def token(secret: str = SECRET, groups: tuple[str, ...] = ("tenure-writers",), **kw: Any) -> str:
    return mint_token(secret, subject="u-1", name="Ann", email="ann@x.gov", groups=groups, **kw)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u-1", "exp": int(time.time()) + 600, "groups": ["tenure-writers"], **extra}


async def assert_refused(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await http.get("/tenures/1", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


async def test_valid_token_reads_and_writes(client: Client) -> None:
    http = client(hs256())
    read = await http.get("/tenures/1", headers=bearer(token()))
    assert read.status_code == 200
    assert read.json() == {"name": "Ann", "email": "ann@x.gov", "user": "ann@x.gov"}
    write = await http.post("/tenures", headers=bearer(token()))
    assert write.status_code == 201 and write.json() == {"by": "u-1"}


async def test_missing_token_is_401_with_bearer_challenge(client: Client) -> None:
    response = await client(hs256()).get("/tenures/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Token": token()}, id="other-header"),
        pytest.param({"Authorization": f"Basic {token()}"}, id="basic-scheme"),
        pytest.param({"Authorization": token()}, id="no-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({"Authorization": f"Bearer {token()} extra"}, id="two-words"),
    ],
)
async def test_token_outside_a_bearer_authorization_header_is_401(
    client: Client, headers: dict[str, str]
) -> None:
    await assert_refused(client(hs256()), headers)


async def test_two_authorization_headers_are_401(client: Client) -> None:
    headers = [("Authorization", f"Bearer {token()}"), ("Authorization", f"Bearer {token()}")]
    response = await client(hs256()).get("/tenures/1", headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: "not-a-jwt", id="malformed"),
        pytest.param(lambda: "a.b.c", id="three-garbage-parts"),
        pytest.param(lambda: token(OTHER_SECRET), id="wrong-signature"),
        pytest.param(lambda: token(extra_claims={"exp": int(time.time()) - 30}), id="expired"),
        pytest.param(
            lambda: token(extra_claims={"nbf": int(time.time()) + 600}), id="not-yet-valid"
        ),
        pytest.param(
            lambda: unsigned({"alg": "none", "typ": "JWT"}, claims()) + ".", id="alg-none"
        ),
        pytest.param(lambda: token(extra_claims={"exp": None}), id="exp-null"),
        pytest.param(lambda: token(extra_claims={"sub": ""}), id="empty-sub"),
        pytest.param(
            lambda: token(extra_claims={"groups": "tenure-writers"}), id="groups-not-list"
        ),
        pytest.param(lambda: token(extra_claims={"name": 7}), id="name-not-string"),
    ],
)
async def test_unverifiable_tokens_are_401(client: Client, make: Callable[[], str]) -> None:
    """Tokens are made when the test runs: times relative to collection would drift."""
    await assert_refused(client(hs256()), bearer(make()))


async def test_token_without_exp_is_401(client: Client) -> None:
    no_exp = {k: v for k, v in claims().items() if k != "exp"}
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = unsigned(header, no_exp)
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    await assert_refused(client(hs256()), bearer(f"{signing_input}.{b64(signature)}"))


async def test_leeway_accepts_a_just_expired_token(client: Client) -> None:
    just_expired = token(extra_claims={"exp": int(time.time()) - 5})
    response = await client(hs256(leeway=60)).get("/tenures/1", headers=bearer(just_expired))
    assert response.status_code == 200


async def test_audience_and_issuer_are_checked_when_configured(client: Client) -> None:
    http = client(hs256(audience="tenure-api", issuer="https://idp.example"))
    good = token(audience="tenure-api", issuer="https://idp.example")
    assert (await http.get("/tenures/1", headers=bearer(good))).status_code == 200
    await assert_refused(http, bearer(token(audience="person-api", issuer="https://idp.example")))
    await assert_refused(http, bearer(token(issuer="https://idp.example")))
    await assert_refused(http, bearer(token(audience="tenure-api", issuer="https://evil")))


async def test_audience_is_ignored_when_not_configured(client: Client) -> None:
    response = await client(hs256()).get("/tenures/1", headers=bearer(token(audience="any")))
    assert response.status_code == 200


async def test_write_without_a_write_group_is_403_but_read_is_allowed(client: Client) -> None:
    http = client(hs256())
    reader = token(groups=("tenure-readers",))
    assert (await http.get("/tenures/1", headers=bearer(reader))).status_code == 200
    response = await http.post("/tenures", headers=bearer(reader))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_empty_write_groups_allow_no_writes(client: Client) -> None:
    response = await client(AuthSettings(secret=SECRET)).post("/tenures", headers=bearer(token()))
    assert response.status_code == 403


async def test_name_falls_back_to_subject_and_email_to_empty(client: Client) -> None:
    bare = mint_token(SECRET, subject="svc-tenure-listener")
    response = await client(hs256()).get("/tenures/1", headers=bearer(bare))
    assert response.json() == {"name": "svc-tenure-listener", "email": "", "user": ""}


async def test_rs256_accepts_its_tokens_and_refuses_algorithm_confusion(
    client: Client, rsa_pems: tuple[str, str]
) -> None:
    private, public = rsa_pems
    http = client(AuthSettings(algorithm="RS256", public_key=public))
    signed = mint_token(None, subject="u-1", name="Ann", algorithm="RS256", private_key=private)
    assert (await http.get("/tenures/1", headers=bearer(signed))).status_code == 200

    signing_input = unsigned({"alg": "HS256", "typ": "JWT"}, claims())
    forged = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    await assert_refused(http, bearer(f"{signing_input}.{b64(forged)}"))
    await assert_refused(http, bearer(token()))


def test_principal_user_is_the_event_user() -> None:
    from tidings.web import verify_token

    principal = verify_token(token(), hs256())
    assert principal.user == User(name="Ann", email="ann@x.gov")
    assert principal.groups == frozenset({"tenure-writers"})
    assert principal.token not in repr(principal)


def test_settings_from_env_read_every_variable(tmp_path: Path, rsa_pems: tuple[str, str]) -> None:
    settings = AuthSettings.from_env(
        {
            "TIDINGS_JWT_SECRET": SECRET,
            "TIDINGS_JWT_AUDIENCE": "tenure-api",
            "TIDINGS_JWT_ISSUER": "https://idp.example",
            "TIDINGS_WRITE_GROUPS": "tenure-writers, admins,,",
            "TIDINGS_JWT_LEEWAY": "10",
        }
    )
    assert settings.algorithm == "HS256" and settings.secret == SECRET
    assert settings.audience == "tenure-api" and settings.issuer == "https://idp.example"
    assert settings.write_groups == frozenset({"tenure-writers", "admins"})
    assert settings.leeway == 10
    assert SECRET not in repr(settings)

    path = tmp_path / "public.pem"
    path.write_text(rsa_pems[1])
    from_file = AuthSettings.from_env(
        {"TIDINGS_JWT_ALGORITHM": "rs256", "TIDINGS_JWT_PUBLIC_KEY_FILE": str(path)}
    )
    escaped = AuthSettings.from_env(
        {
            "TIDINGS_JWT_ALGORITHM": "RS256",
            "TIDINGS_JWT_PUBLIC_KEY": rsa_pems[1].replace("\n", "\\n"),
        }
    )
    assert from_file.public_key == escaped.public_key == rsa_pems[1]
    assert from_file.write_groups == frozenset()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "TIDINGS_JWT_SECRET"),
        ({"TIDINGS_JWT_SECRET": "short"}, "TIDINGS_JWT_SECRET"),
        ({"TIDINGS_JWT_ALGORITHM": "ES256", "TIDINGS_JWT_SECRET": SECRET}, "TIDINGS_JWT_ALGORITHM"),
        ({"TIDINGS_JWT_ALGORITHM": "none", "TIDINGS_JWT_SECRET": SECRET}, "TIDINGS_JWT_ALGORITHM"),
        ({"TIDINGS_JWT_ALGORITHM": "RS256"}, "TIDINGS_JWT_PUBLIC_KEY"),
        (
            {"TIDINGS_JWT_ALGORITHM": "RS256", "TIDINGS_JWT_PUBLIC_KEY": "x"},
            "TIDINGS_JWT_PUBLIC_KEY",
        ),
        (
            {"TIDINGS_JWT_ALGORITHM": "RS256", "TIDINGS_JWT_PUBLIC_KEY_FILE": "/nonexistent.pem"},
            "TIDINGS_JWT_PUBLIC_KEY_FILE",
        ),
        ({"TIDINGS_JWT_SECRET": SECRET, "TIDINGS_JWT_PUBLIC_KEY": "x"}, "TIDINGS_JWT_PUBLIC_KEY"),
        ({"TIDINGS_JWT_SECRET": SECRET, "TIDINGS_JWT_LEEWAY": "-1"}, "TIDINGS_JWT_LEEWAY"),
    ],
)
def test_misconfiguration_names_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        AuthSettings.from_env(environ)


def test_mint_token_refuses_a_short_secret_and_a_single_string_of_groups() -> None:
    with pytest.raises(ConfigurationError):
        mint_token("short", subject="u-1")
    with pytest.raises(ConfigurationError):
        mint_token(SECRET, subject="u-1", groups="admins")
