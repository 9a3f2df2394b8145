"""The exception tree of tidings.

TidingsError
├── ConfigurationError        bad topology, bad URL, bad setting
│   └── MissingDependency     an optional client library is not installed
├── EventError                an event cannot be used; never worth a retry
│   ├── DecodeError           bytes that are not an event in any known envelope
│   ├── UnknownEventType      a type (or version) the catalog does not know
│   ├── SchemaViolation       a payload that fails its registered schema
│   └── EventTooLarge         an encoded event above the configured maximum
└── BrokerError               the broker refused or could not be reached
    ├── BrokerUnavailable     connection lost or refused; worth a retry later
    ├── UnknownTopic          publish to a topic that was never declared
    └── UnknownSubscription   consume from a subscription that was never declared
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "DecodeError",
    "EventError",
    "EventTooLarge",
    "MissingDependency",
    "SchemaViolation",
    "TidingsError",
    "UnknownEventType",
    "UnknownSubscription",
    "UnknownTopic",
]


class TidingsError(Exception):
    """Base of every error tidings raises on purpose."""


class ConfigurationError(TidingsError):
    """A topology, URL or setting is invalid; the message names the offending field."""


class MissingDependency(ConfigurationError):
    """An optional client library is needed; the message says which extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'tidings[{extra}]'")
        self.package = package
        self.extra = extra


class EventError(TidingsError):
    """An event that can never be processed as it is. Listeners dead-letter these at once."""


class DecodeError(EventError):
    """The bytes are not an event in any envelope tidings understands."""


class UnknownEventType(EventError):
    """The catalog has no schema for this event type and version."""

    def __init__(self, event_type: str, version: str | None = None) -> None:
        what = event_type if version is None else f"{event_type} {version}"
        super().__init__(f"unknown event type: {what}")
        self.event_type = event_type
        self.version = version


class SchemaViolation(EventError):
    """The event's data fails the schema registered for its type and version."""

    def __init__(self, event_type: str, version: str, errors: list[str]) -> None:
        super().__init__(f"{event_type} {version} fails its schema: " + "; ".join(errors))
        self.event_type = event_type
        self.version = version
        self.errors = errors


class EventTooLarge(EventError):
    """An encoded event is larger than the configured maximum; nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event is {size} bytes, above the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class BrokerError(TidingsError):
    """The broker refused an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached now; the operation may succeed later."""


class UnknownTopic(BrokerError):
    """Publish to a topic that no topology declared."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"unknown topic: {topic}")
        self.topic = topic


class UnknownSubscription(BrokerError):
    """An operation on a subscription that no topology declared."""

    def __init__(self, subscription: str) -> None:
        super().__init__(f"unknown subscription: {subscription}")
        self.subscription = subscription
