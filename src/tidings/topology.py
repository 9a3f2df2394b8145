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
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tidings.errors import ConfigurationError

__all__ = ["Backoff", "Subscription", "Topic", "Topology"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_]{1,200}$"


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
    """

    name: str = Field(pattern=NAME_PATTERN)
    topics: tuple[str, ...] = Field(min_length=1)
    event_types: tuple[str, ...] = ()
    max_attempts: int = Field(default=5, ge=1, le=1000)
    backoff: Backoff = Backoff()
    in_flight: int = Field(default=16, ge=1, le=10_000)
    rate: float | None = Field(default=None, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _check_types(self) -> Subscription:
        import re

        for event_type in self.event_types:
            if not re.match(EVENT_TYPE_PATTERN, event_type):
                raise ValueError(f"event_types: {event_type!r} is not a valid event type name")
        return self

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
