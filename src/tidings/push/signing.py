"""Signing and verifying webhooks as the Standard Webhooks specification says.

A secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes (the key). Each
request carries ``webhook-id`` (the event id: the same on every attempt, so a receiver
drops repeats by it), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, under the key, of
``{id}.{timestamp}.{body}``. Several space-separated signatures may be sent while a secret
is rotated; a receiver accepts a request when one of them matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from tidings.errors import ConfigurationError, TidingsError

__all__ = [
    "SECRET_PREFIX",
    "TOLERANCE",
    "SignatureError",
    "new_secret",
    "secret_key",
    "sign",
    "signature_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
TOLERANCE = 300
"""Seconds a receiver accepts between a request's timestamp and its own clock."""


class SignatureError(TidingsError):
    """A webhook's signature headers are missing, stale or do not match its body."""


def new_secret() -> str:
    """A fresh secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret``; raises ConfigurationError unless it is ``whsec_`` and
    the base64 of 24 to 64 bytes."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("a webhook secret is 'whsec_' and base64") from None
    if not 24 <= len(key) <= 64:
        raise ConfigurationError("a webhook secret holds 24 to 64 bytes")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one request."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(
    key: bytes, message_id: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    """The three ``webhook-*`` headers of one attempt to send ``body``."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }


def verify(key: bytes, body: bytes, headers: Mapping[str, str], *, now: float | None = None) -> str:
    """The ``webhook-id`` of a request whose signature matches ``body`` and whose timestamp
    is within :data:`TOLERANCE` of now; raises :class:`SignatureError` otherwise."""
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (message_id and stamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit():
        raise SignatureError("webhook-timestamp is not a number of seconds")
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE:
        raise SignatureError("webhook-timestamp is too far from now")
    expected = sign(key, message_id, timestamp, body).encode()
    for candidate in signatures.split(" "):
        if hmac.compare_digest(candidate.encode(), expected):
            return message_id
    raise SignatureError("no matching signature")
