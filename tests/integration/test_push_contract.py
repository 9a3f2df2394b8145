"""What a push subscription is and what it sends, without a broker: the topology fields and
their checks, the signature scheme against the ``standardwebhooks`` library both ways, and
what each answer means."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import standardwebhooks

from tidings.errors import ConfigurationError
from tidings.listener import DeadLetter, Retry
from tidings.push import (
    Answer,
    SignatureError,
    judge,
    new_secret,
    retry_after,
    secret_key,
    signature_headers,
    verify,
)
from tidings.topology import Subscription, Topology

PUSH = {"topics": ["tenure"], "url": "https://hooks.example.org/x", "secret_env": "HOOK"}


def test_a_push_subscription_is_declared_in_toml_with_its_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        "[topics.tenure]\n[subscriptions.alerts]\n"
        'topics = ["tenure"]\nurl = "http://127.0.0.1:8004/hook"\n'
        'secret_env = "ALERTS_SECRET"\ntimeout = 5.0\nmode = "binary"\nrate = 20.0\n'
    )
    (sub,) = Topology.from_toml(path).subscriptions
    assert sub.push and sub.url == "http://127.0.0.1:8004/hook"
    assert (sub.secret_env, sub.timeout, sub.mode, sub.rate) == (
        "ALERTS_SECRET",
        5.0,
        "binary",
        20.0,
    )
    assert Subscription.model_validate(sub.model_dump(mode="json")) == sub


def test_a_listener_subscription_dumps_as_before() -> None:
    sub = Subscription(name="copy", topics=("tenure",))
    assert not sub.push
    assert set(sub.model_dump(mode="json")).isdisjoint({"url", "secret_env", "timeout", "mode"})


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"url": "ftp://hooks.example.org/x"}, "http or https"),
        ({"url": "file:///etc/passwd"}, "http or https"),
        ({"url": "/relative"}, "http or https"),
        ({"url": "https://user:pw@hooks.example.org/"}, "credentials"),
        ({"url": "https:///nohost"}, "no host"),
        ({"secret_env": None}, "secret_env"),
        ({"secret_env": "not a name"}, "secret_env"),
        ({"timeout": 40.0}, "shorter than lease_seconds"),
        ({"mode": "batch"}, "mode"),
    ],
)
def test_push_endpoints_are_checked(change: dict[str, object], complaint: str) -> None:
    spec = {**PUSH, **change}
    with pytest.raises(ConfigurationError, match=complaint):
        Topology.from_dict(
            {"topics": [{"name": "tenure"}], "subscriptions": [{"name": "a", **spec}]}
        )


def test_a_secret_variable_needs_a_url() -> None:
    with pytest.raises(ValueError, match="only a push subscription"):
        Subscription(name="a", topics=("t",), secret_env="HOOK")


def test_standard_webhooks_verifies_our_signature_and_we_verify_theirs() -> None:
    secret = new_secret()
    key = secret_key(secret)
    body = b'{"id":"e1","data":{"n":1}}'
    headers = signature_headers(key, "e1", body)
    standardwebhooks.Webhook(secret).verify(body, headers)
    theirs = standardwebhooks.Webhook(secret)
    now = datetime.now(UTC)
    signed = {
        "webhook-id": "e2",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": theirs.sign("e2", now, body.decode()),
    }
    assert verify(key, body, signed) == "e2"
    with pytest.raises(SignatureError, match="no matching"):
        verify(key, body + b" ", signed)
    with pytest.raises(SignatureError, match="too far"):
        verify(key, body, signed, now=time.time() + 3600)
    with pytest.raises(SignatureError, match="missing"):
        verify(key, body, {"webhook-id": "e2"})


@pytest.mark.parametrize(
    "secret", ["", "whsec_not base64!", "whsec_" + base64.b64encode(b"x").decode()]
)
def test_malformed_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        secret_key(secret)


def test_each_answer_means_what_the_contract_says() -> None:
    judge(Answer(200, None, ""))
    judge(Answer(204, None, ""))
    for status in (408, 429, 500, 503, 599):
        with pytest.raises(Retry) as retry:
            judge(Answer(status, 7.0, "busy"))
        assert retry.value.after == 7.0 and retry.value.reason == f"HTTP {status}: busy"
    for status in (301, 400, 401, 404, 410, 422):
        with pytest.raises(DeadLetter, match=f"HTTP {status}: nope"):
            judge(Answer(status, None, "nope"))


def test_retry_after_takes_seconds_or_a_date_and_is_capped() -> None:
    assert retry_after("5") == 5.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("999999") == 3600.0
    later = retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    assert later == pytest.approx(10.0)
