"""How tokens are verified: :class:`AuthSettings`, from code or from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tidings.errors import ConfigurationError

__all__ = ["ALGORITHMS", "MIN_RSA_BITS", "MIN_SECRET_BYTES", "Algorithm", "AuthSettings"]

Algorithm = Literal["HS256", "RS256"]
ALGORITHMS: tuple[Algorithm, ...] = ("HS256", "RS256")
MIN_SECRET_BYTES = 32
"""An HS256 secret shorter than the hash (RFC 7518 section 3.2) is refused."""
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class AuthSettings:
    """The key and rules tokens are verified with.

    HS256 needs ``secret`` (at least 32 bytes); RS256 needs ``public_key`` (an RSA PEM of at
    least 2048 bits); the other one must be unset. A write needs at least one of
    ``write_groups`` in the token's ``groups`` claim, so an empty set allows no writes.
    Invalid settings raise :class:`~tidings.errors.ConfigurationError` naming the field and
    its environment variable.
    """

    algorithm: Algorithm = "HS256"
    secret: str | None = field(default=None, repr=False)
    public_key: str | None = None
    audience: str | None = None
    issuer: str | None = None
    write_groups: frozenset[str] = frozenset()
    leeway: int = 0
    _key: str | RSAPublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"algorithm (TIDINGS_JWT_ALGORITHM) must be HS256 or RS256, not {self.algorithm!r}"
            )
        if isinstance(self.write_groups, str):
            raise ConfigurationError("write_groups (TIDINGS_WRITE_GROUPS) must be a set of names")
        object.__setattr__(self, "write_groups", frozenset(self.write_groups))
        if isinstance(self.leeway, bool) or not isinstance(self.leeway, int) or self.leeway < 0:
            raise ConfigurationError("leeway (TIDINGS_JWT_LEEWAY) must be whole seconds >= 0")
        object.__setattr__(self, "_key", self._load_key())

    def _load_key(self) -> str | RSAPublicKey:
        if self.algorithm == "HS256":
            if self.public_key is not None:
                raise ConfigurationError("public_key (TIDINGS_JWT_PUBLIC_KEY) is for RS256 only")
            if not self.secret:
                raise ConfigurationError("secret (TIDINGS_JWT_SECRET) is required for HS256")
            if len(self.secret.encode()) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"secret (TIDINGS_JWT_SECRET) must be at least {MIN_SECRET_BYTES} bytes"
                )
            return self.secret
        if self.secret is not None:
            raise ConfigurationError("secret (TIDINGS_JWT_SECRET) is for HS256 only")
        if not self.public_key:
            raise ConfigurationError("public_key (TIDINGS_JWT_PUBLIC_KEY) is required for RS256")
        try:
            key = load_pem_public_key(self.public_key.encode())
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "public_key (TIDINGS_JWT_PUBLIC_KEY) is not a PEM public key"
            ) from exc
        if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(
                f"public_key (TIDINGS_JWT_PUBLIC_KEY) must be an RSA key of at least "
                f"{MIN_RSA_BITS} bits"
            )
        return key

    @property
    def verification_key(self) -> str | RSAPublicKey:
        """The secret (HS256) or the loaded public key (RS256)."""
        return self._key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AuthSettings:
        """Settings from ``TIDINGS_JWT_ALGORITHM`` (default HS256), ``TIDINGS_JWT_SECRET``,
        ``TIDINGS_JWT_PUBLIC_KEY`` or ``TIDINGS_JWT_PUBLIC_KEY_FILE`` (a literal ``\\n`` in the
        former is read as a newline), ``TIDINGS_JWT_AUDIENCE``, ``TIDINGS_JWT_ISSUER``,
        ``TIDINGS_WRITE_GROUPS`` (comma separated) and ``TIDINGS_JWT_LEEWAY`` (seconds).
        Empty values count as unset; the secret is used as is, other values are stripped."""

        def get(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        algorithm = (get("TIDINGS_JWT_ALGORITHM") or "HS256").upper()
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(f"TIDINGS_JWT_ALGORITHM must be HS256 or RS256: {algorithm}")
        public_key = get("TIDINGS_JWT_PUBLIC_KEY")
        key_file = get("TIDINGS_JWT_PUBLIC_KEY_FILE")
        if public_key and key_file:
            raise ConfigurationError(
                "set TIDINGS_JWT_PUBLIC_KEY or TIDINGS_JWT_PUBLIC_KEY_FILE, not both"
            )
        if public_key:
            public_key = public_key.replace("\\n", "\n")
        elif key_file:
            try:
                public_key = Path(key_file).read_text()
            except OSError as exc:
                raise ConfigurationError(
                    f"TIDINGS_JWT_PUBLIC_KEY_FILE cannot be read: {key_file}: {exc.strerror}"
                ) from exc
        leeway = get("TIDINGS_JWT_LEEWAY") or "0"
        if not (leeway.isascii() and leeway.isdigit()):
            raise ConfigurationError(f"TIDINGS_JWT_LEEWAY must be whole seconds >= 0: {leeway}")
        groups = get("TIDINGS_WRITE_GROUPS") or ""
        return cls(
            algorithm=algorithm,
            secret=environ.get("TIDINGS_JWT_SECRET") or None,
            public_key=public_key,
            audience=get("TIDINGS_JWT_AUDIENCE"),
            issuer=get("TIDINGS_JWT_ISSUER"),
            write_groups=frozenset(g.strip() for g in groups.split(",") if g.strip()),
            leeway=int(leeway),
        )
