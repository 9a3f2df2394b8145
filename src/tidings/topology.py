"""Topics and subscriptions, declared in Python or a TOML file and applied to any backend.

A *topic* is where one domain publishes. A *subscription* is one dependent application's
durable queue: bound to one or more topics, filtered to the event types it needs, with its
own retry, dead-letter and throttle policy. Many subscriptions on one topic is fan-out.

TOML form::

    [topics.person]
    [topics.tenure]

    [subscriptions.tenure-listener]
    topics = ["person"]
    event_types = ["PersonCreatedEvent", "PersonUpdatedEvent"]
    max_attempts = 5
    in_flight = 16
    rate = 200.0            # events per second; omit for no limit
    backoff = { initial = 1.0, maximum = 60.0, multiplier = 2.0, jitter = 0.2 }

    [subscriptions.alerts]          # a push subscription: events are POSTed to an endpoint
    topics = ["tenure"]
    url = "https://alerts.example.org/webhooks/tidings"
    secret_env = "ALERTS_WEBHOOK_SECRET"   # names the variable holding the signing secret
    timeout = 10.0          # seconds per request
    mode = "structured"     # CloudEvents HTTP mode: structured or binary
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from tidings.errors import ConfigurationError

__all__ = ["Backoff", "Subscription", "Topic", "Topology"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_]{1,200}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,199}$"
PUSH_FIELDS = ("url", "secret_env", "timeout", "mode")
"""The fields of a push subscription (left out of a listener subscription's dump)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Backoff(_Frozen):
    """Exponential backoff between attempts: ``initial * multiplier**(attempt-1)``, capped at
    ``maximum``, then spread by ``±jitter`` (a fraction) so that retries do not stampede."""

    initial: float = Field(default=1.0, ge=0)
    maximum: float = Field(default=60.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.2, ge=0, le=1)


class Topic(_Frozen):
    """A named stream of events from one domain."""

    name: str = Field(pattern=NAME_PATTERN)


class Subscription(_Frozen):
    """One dependent application's durable, filtered view of one or more topics.

    ``event_types`` empty means every type. ``max_attempts`` counts deliveries, the first
    included; after the last failed one the event goes to this subscription's dead letters.
    ``in_flight`` bounds unsettled deliveries held by one consumer; ``rate`` bounds events per
    second per consumer. ``lease_seconds`` is how long a delivery stays invisible to other
    consumers before it is given to another (backends with leases only): longer than the
    slowest handler, or a slow event is delivered twice (the inbox keeps it to one effect).

    With ``url`` the subscription is a *push* subscription: the push dispatcher POSTs each
    event to that ``http(s)`` URL, signed as Standard Webhooks says with the secret held by
    the environment variable ``secret_env`` (never the secret itself), waiting ``timeout``
    seconds at most (less than ``lease_seconds``), as a CloudEvent in ``mode`` structured
    (the whole event as the JSON body) or binary (``ce-*`` headers, the data as the body).
    """

    name: str = Field(pattern=NAME_PATTERN)
    topics: tuple[str, ...] = Field(min_length=1)
    event_types: tuple[str, ...] = ()
    max_attempts: int = Field(default=5, ge=1, le=1000)
    backoff: Backoff = Backoff()
    in_flight: int = Field(default=16, ge=1, le=10_000)
    rate: float | None = Field(default=None, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0, le=86_400)
    url: str | None = Field(default=None, max_length=2000)
    secret_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    timeout: float = Field(default=10.0, gt=0, le=300)
    mode: Literal["structured", "binary"] = "structured"

    @model_validator(mode="after")
    def _check_types(self) -> Subscription:
        for event_type in self.event_types:
            if not re.match(EVENT_TYPE_PATTERN, event_type):
                raise ValueError(f"event_types: {event_type!r} is not a valid event type name")
        return self

    @model_validator(mode="after")
    def _check_endpoint(self) -> Subscription:
        if self.url is None:
            if self.secret_env is not None:
                raise ValueError("secret_env: only a push subscription (with a url) has one")
            return self
        _check_url(self.url)
        if self.secret_env is None:
            raise ValueError("secret_env: a push subscription names its signing secret's variable")
        if self.timeout >= self.lease_seconds:
            raise ValueError("timeout: must be shorter than lease_seconds")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.url is None:
            for name in PUSH_FIELDS:
                data.pop(name, None)
        return data

    @property
    def push(self) -> bool:
        """True for a push subscription (events are POSTed to ``url``)."""
        return self.url is not None

    def accepts(self, topic: str, event_type: str) -> bool:
        """True when an event of ``event_type`` published to ``topic`` belongs here."""
        return topic in self.topics and (not self.event_types or event_type in self.event_types)


class Topology(_Frozen):
    """Everything a broker must hold: topics and the subscriptions bound to them."""

    topics: tuple[Topic, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()

    @model_validator(mode="after")
    def _check_references(self) -> Topology:
        topic_names = [t.name for t in self.topics]
        _unique("topics", topic_names)
        _unique("subscriptions", [s.name for s in self.subscriptions])
        for sub in self.subscriptions:
            for topic in sub.topics:
                if topic not in topic_names:
                    raise ValueError(f"subscriptions.{sub.name}.topics: unknown topic {topic!r}")
        return self

    @classmethod
    def build(
        cls, topics: Iterable[str | Topic], subscriptions: Iterable[Subscription] = ()
    ) -> Topology:
        """Declare a topology in Python; raises :class:`ConfigurationError` when invalid."""
        items = [t if isinstance(t, Topic) else {"name": t} for t in topics]
        return cls.from_dict({"topics": items, "subscriptions": list(subscriptions)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Topology:
        """Load the TOML form described in this module's docstring."""
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"{path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        unknown = set(raw) - {"topics", "subscriptions"}
        if unknown:
            raise ConfigurationError(f"{path}: unknown section(s): {', '.join(sorted(unknown))}")
        topics = raw.get("topics", {})
        subs = raw.get("subscriptions", {})
        if not isinstance(topics, dict) or not isinstance(subs, dict):
            raise ConfigurationError(f"{path}: topics and subscriptions must be tables")
        return cls.from_dict(
            {
                "topics": [{"name": name, **(body or {})} for name, body in topics.items()],
                "subscriptions": [{"name": name, **body} for name, body in subs.items()],
            }
        )

    def topic(self, name: str) -> Topic:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)

    def subscription(self, name: str) -> Subscription:
        for sub in self.subscriptions:
            if sub.name == name:
                return sub
        raise KeyError(name)

    def subscribers(self, topic: str, event_type: str) -> list[Subscription]:
        """The subscriptions that receive an event of ``event_type`` published to ``topic``."""
        return [s for s in self.subscriptions if s.accepts(topic, event_type)]

    def merge(self, other: Topology) -> Topology:
        """This topology with ``other``'s topics and subscriptions added or replaced by name."""
        topics = {t.name: t for t in self.topics} | {t.name: t for t in other.topics}
        subs = {s.name: s for s in self.subscriptions} | {s.name: s for s in other.subscriptions}
        return Topology.from_dict(
            {"topics": list(topics.values()), "subscriptions": list(subs.values())}
        )


def _check_url(url: str) -> None:
    """Only absolute ``http(s)`` URLs with a host and no credentials (secrets stay out of
    the topology)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"url: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url: must be http or https, not {parts.scheme or 'relative'!r}")
    if not parts.hostname:
        raise ValueError("url: has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: must not carry credentials; use secret_env")
    if parts.fragment:
        raise ValueError("url: must not have a fragment")


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: {name!r} is declared twice")
        seen.add(name)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "topology"
        parts.append(f"{where}: {error['msg']}")
    return "invalid topology: " + "; ".join(parts)
