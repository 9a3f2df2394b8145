"""``amqp://`` URLs: where the server is, which names are ours, which queue type to create."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tidings.errors import ConfigurationError

__all__ = ["QueueType", "RabbitOptions", "parse_url"]

QueueType = Literal["quorum", "classic"]

_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OURS = ("namespace", "queue_type")
_CLIENT = (
    "heartbeat",
    "timeout",
    "name",
    "auth",
    "cafile",
    "capath",
    "cadata",
    "keyfile",
    "certfile",
    "no_verify_ssl",
)
"""Options the AMQP client (aiormq) reads from the URL; passed on unchanged."""


@dataclass(frozen=True, slots=True, repr=False)
class RabbitOptions:
    """What an ``amqp://`` URL says.

    ``client_url`` is the URL the AMQP client connects with (our options removed).
    ``namespace`` prefixes every exchange and queue name (``NAME.``); empty means no prefix.
    ``queue_type`` is the type of every queue the broker creates: ``quorum`` (default:
    replicated, counts redeliveries exactly) or ``classic`` (lighter; see
    :mod:`tidings.brokers.rabbitmq` for what it cannot count).
    """

    client_url: str
    namespace: str = ""
    queue_type: QueueType = "quorum"

    @property
    def prefix(self) -> str:
        return f"{self.namespace}." if self.namespace else ""

    @property
    def display_url(self) -> str:
        """The server's address without credentials, for messages and ``repr``."""
        parts = urlsplit(self.client_url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path or '/'}"

    def __repr__(self) -> str:
        """Without the credentials of :attr:`client_url`."""
        return (
            f"RabbitOptions({self.display_url!r}, namespace={self.namespace!r}, "
            f"queue_type={self.queue_type!r})"
        )


def parse_url(url: str) -> RabbitOptions:
    """Read ``amqp[s]://user:password@host:port/vhost?options``. Our options are
    ``namespace=NAME`` and ``queue_type=quorum|classic``; the AMQP client's own (``heartbeat``,
    ``timeout``, ``name``, ``auth`` and the TLS files) pass through. Raises
    :class:`ConfigurationError` naming an unknown or bad option."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("amqp", "amqps"):
        raise ConfigurationError(f"broker URL: expected amqp:// or amqps://, got {parts.scheme!r}")
    if parts.fragment:
        raise ConfigurationError(f"broker URL: unexpected fragment #{parts.fragment}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError as exc:
        raise ConfigurationError(f"broker URL: {exc}") from None
    namespace = ""
    queue_type: QueueType = "quorum"
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "namespace":
            if not _NAMESPACE.match(value):
                raise ConfigurationError(
                    f"broker URL: option namespace={value!r} must be 1 to 64 letters, digits, "
                    "'_', '-' or '.', starting with a letter or digit"
                )
            namespace = value
        elif name == "queue_type":
            if value not in ("quorum", "classic"):
                raise ConfigurationError(
                    f"broker URL: option queue_type={value!r} must be quorum or classic"
                )
            queue_type = "classic" if value == "classic" else "quorum"
        elif name in _CLIENT:
            passed.append((name, value))
        else:
            raise ConfigurationError(
                f"broker URL: unknown option {name!r} (known: {', '.join(_OURS + _CLIENT)})"
            )
    client_url = urlunsplit(parts._replace(query=urlencode(passed)))
    return RabbitOptions(client_url=client_url, namespace=namespace, queue_type=queue_type)
