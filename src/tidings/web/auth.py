"""JWT bearer authentication: verified tokens, a ``groups`` claim for writes.

Verification promises: the signature is checked with the configured key; only the configured
algorithm is accepted (``none``, and HS256 tokens against an RS256 key, are refused); ``exp``
and ``sub`` are required; ``exp``, ``nbf`` and ``iat`` are honoured with ``leeway`` seconds;
``aud`` and ``iss`` are checked when configured and ignored otherwise. The token is taken only
from ``Authorization: Bearer <token>``. Claims: ``name`` falls back to ``sub`` and ``email``
to ``""`` when absent; ``groups`` is a list of strings, absent meaning none; a claim of
another type makes the token invalid.

Routes of an app set up by :func:`tidings.web.install` check the caller before they read the
request (:class:`AuthenticatedFirst`): a request without a valid token is a 401, and a write
without a write group a 403, whatever its body, so an unauthenticated caller learns nothing
about what the API would accept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

import jwt
from fastapi import Depends
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from tidings.events.model import User
from tidings.web.problems import Problem, status_phrase
from tidings.web.settings import AuthSettings

__all__ = [
    "AuthenticatedFirst",
    "Principal",
    "Reader",
    "Writer",
    "authenticated",
    "depends_on",
    "verify_token",
    "writer",
]

logger = logging.getLogger("tidings.web")


@dataclass(frozen=True)
class Principal:
    """The verified caller. ``claims`` holds every claim of the token, for service needs."""

    subject: str
    name: str
    email: str
    groups: frozenset[str]
    token: str = field(repr=False)
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def user(self) -> User:
        """The caller as events record it (``user`` of the envelope)."""
        return User(name=self.name, email=self.email)


def _unauthorized(detail: str, *, invalid: bool) -> Problem:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return Problem(401, status_phrase(401), detail, headers={"WWW-Authenticate": challenge})


def _claim(claims: Mapping[str, Any], name: str, default: str) -> str:
    value = claims.get(name, default)
    if not isinstance(value, str):
        raise _unauthorized(f"the {name} claim must be a string", invalid=True)
    return value


def verify_token(token: str, settings: AuthSettings) -> Principal:
    """The principal of a verified ``token``; a :class:`Problem` 401 if it is not valid."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.verification_key,
            algorithms=[settings.algorithm],
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway,
            options={
                "require": ["exp", "sub"],
                "verify_aud": settings.audience is not None,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("the token has expired", invalid=True) from exc
    except jwt.ImmatureSignatureError as exc:
        raise _unauthorized("the token is not valid yet", invalid=True) from exc
    except jwt.PyJWTError as exc:
        logger.info("token refused: %s", exc)
        raise _unauthorized("the token is not valid", invalid=True) from exc
    subject = _claim(claims, "sub", "")
    if not subject:
        raise _unauthorized("the sub claim must not be empty", invalid=True)
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise _unauthorized("the groups claim must be a list of strings", invalid=True)
    return Principal(
        subject=subject,
        name=_claim(claims, "name", subject),
        email=_claim(claims, "email", ""),
        groups=frozenset(groups),
        token=token,
        claims=MappingProxyType(claims),
    )


def _settings(request: Request) -> AuthSettings:
    settings = getattr(request.app.state, "tidings_auth", None)
    if not isinstance(settings, AuthSettings):
        raise RuntimeError("tidings.web.install(app, auth=...) was not called on this app")
    return settings


async def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the caller of a bearer token, or a 401 with ``WWW-Authenticate``."""
    known = getattr(request.state, "tidings_principal", None)
    if isinstance(known, Principal):
        return known
    values = request.headers.getlist("authorization")
    if not values:
        raise _unauthorized("a bearer token is required in the Authorization header", invalid=False)
    scheme, _, token = values[0].partition(" ")
    token = token.strip()
    if len(values) > 1 or scheme.lower() != "bearer" or not token or " " in token:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", invalid=False)
    principal = verify_token(token, _settings(request))
    request.state.tidings_principal = principal
    return principal


Reader = Annotated[Principal, Depends(authenticated)]
"""Parameter annotation for endpoints any authenticated caller may use."""


async def writer(request: Request, principal: Reader) -> Principal:
    """FastAPI dependency: an authenticated caller in one of ``write_groups``, or a 403."""
    if principal.groups.isdisjoint(_settings(request).write_groups):
        raise Problem(403, status_phrase(403), "the token has none of the groups allowed to write")
    return principal


Writer = Annotated[Principal, Depends(writer)]
"""Parameter annotation for endpoints that change data."""


def depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    """Whether ``dependant`` (a route's, or a dependency's) needs ``call``, at any depth."""
    return any(d.call is call or depends_on(d, call) for d in dependant.dependencies)


class AuthenticatedFirst(APIRoute):
    """A route that, when it depends on :func:`authenticated` (or :func:`writer`), checks the
    caller before FastAPI reads and validates the request body, so that a malformed body
    from an unauthenticated caller is a 401, not a 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needs_writer = depends_on(self.dependant, writer)
        if not (needs_writer or depends_on(self.dependant, authenticated)):
            return handler

        async def checked(request: Request) -> Response:
            principal = await authenticated(request)
            if needs_writer:
                await writer(request, principal)
            return await handler(request)

        return checked
