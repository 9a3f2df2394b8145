"""Tokens for development, tests and service-to-service calls."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from tidings.errors import ConfigurationError
from tidings.web.settings import ALGORITHMS, MIN_SECRET_BYTES, Algorithm

__all__ = ["mint_token"]


def mint_token(
    settings_secret: str | None,
    *,
    subject: str,
    name: str | None = None,
    email: str | None = None,
    groups: Iterable[str] = (),
    ttl_seconds: int = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: Algorithm = "HS256",
    private_key: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A signed token that :func:`~tidings.web.auth.verify_token` accepts under matching
    settings: ``sub``, ``iat``, ``exp`` (now + ``ttl_seconds``), ``groups`` (sorted), and
    ``name``, ``email``, ``aud``, ``iss`` when given. ``extra_claims`` are added last and may
    replace any of these. HS256 signs with ``settings_secret``; RS256 with ``private_key``
    (PEM), and ``settings_secret`` is then ignored.
    """
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"algorithm must be HS256 or RS256, not {algorithm!r}")
    if isinstance(groups, str):
        raise ConfigurationError("groups must be a collection of names, not one string")
    if ttl_seconds <= 0:
        raise ConfigurationError("ttl_seconds must be positive")
    key: str
    if algorithm == "HS256":
        if not settings_secret or len(settings_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"settings_secret must be an HS256 secret of at least {MIN_SECRET_BYTES} bytes"
            )
        key = settings_secret
    else:
        if not private_key:
            raise ConfigurationError("private_key (PEM) is required for RS256")
        key = private_key
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": now,
        "exp": now + ttl_seconds,
        "groups": sorted(set(groups)),
    }
    optional = {"name": name, "email": email, "aud": audience, "iss": issuer}
    claims.update({k: v for k, v in optional.items() if v is not None})
    claims.update(extra_claims or {})
    return jwt.encode(claims, key, algorithm=algorithm)
