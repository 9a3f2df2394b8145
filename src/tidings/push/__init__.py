"""Push subscriptions: events POSTed to any HTTP endpoint, signed as Standard Webhooks
says, retried with backoff, throttled and dead-lettered like any subscription's."""

from tidings.push.breaker import Breaker, State
from tidings.push.client import Answer, PushClient, judge, retry_after
from tidings.push.dispatcher import PushDispatcher, PushRuntime
from tidings.push.request import build_request
from tidings.push.signing import (
    SignatureError,
    new_secret,
    secret_key,
    sign,
    signature_headers,
    verify,
)

__all__ = [
    "Answer",
    "Breaker",
    "PushClient",
    "PushDispatcher",
    "PushRuntime",
    "SignatureError",
    "State",
    "build_request",
    "judge",
    "new_secret",
    "retry_after",
    "secret_key",
    "sign",
    "signature_headers",
    "verify",
]
