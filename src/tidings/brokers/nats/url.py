"""``nats://`` URLs: which servers, which namespace on them, how many replicas per stream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from tidings.errors import ConfigurationError

__all__ = ["NatsOptions", "parse_url"]

NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
"""No ``_`` and no ``.``: ``_`` separates the namespace from the rest of a stream name, so
that no two namespaces can produce the same stream name."""

_OPTIONS = ("namespace", "replicas")


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """What a ``nats://`` URL says.

    ``servers`` are the URLs handed to the client (credentials included), tried in turn on
    connect and on every reconnect. ``namespace`` prefixes every stream, consumer subject
    and stream name the broker creates. ``replicas`` is the replica count of every stream it
    creates (1 on a single server; 3 on a cluster that must survive losing a node).
    """

    servers: tuple[str, ...]
    namespace: str = "tidings"
    replicas: int = 1

    def __repr__(self) -> str:
        hosts = ",".join(_without_password(s) for s in self.servers)
        return f"NatsOptions({hosts}, namespace={self.namespace!r}, replicas={self.replicas})"


def parse_url(url: str) -> NatsOptions:
    """Read ``nats://[user:password@]host[:port][,host:port...][/]`` (or ``tls://``) with the
    query options ``namespace=NAME`` (default ``tidings``; letters, digits and ``-``) and
    ``replicas=N`` (1 to 5, default 1). Raises :class:`ConfigurationError` naming what is
    wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("nats", "tls"):
        raise ConfigurationError(f"broker URL {_safe(url)!r}: expected the nats:// scheme")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigurationError(f"broker URL {_safe(url)!r}: names no server")
    if parts.path not in ("", "/"):
        raise ConfigurationError(
            f"broker URL {_safe(url)!r}: unexpected path {parts.path!r}; "
            "write options as ?namespace=NAME&replicas=N"
        )
    if parts.fragment:
        raise ConfigurationError(f"broker URL {_safe(url)!r}: unexpected fragment")
    prefix = f"{scheme}://{userinfo}@" if userinfo else f"{scheme}://"
    servers = []
    for host in hosts.split(","):
        if not host or host.startswith(":"):
            raise ConfigurationError(f"broker URL {_safe(url)!r}: empty server in {hosts!r}")
        servers.append(prefix + host)
    namespace, replicas = "tidings", 1
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "namespace":
            if not NAMESPACE_PATTERN.match(value):
                raise ConfigurationError(
                    f"broker URL {_safe(url)!r}: namespace={value!r} must be 1 to 32 letters, "
                    "digits or '-', starting with a letter or digit"
                )
            namespace = value
        elif name == "replicas":
            if not value.isdigit() or not 1 <= int(value) <= 5:
                raise ConfigurationError(
                    f"broker URL {_safe(url)!r}: replicas={value!r} must be a number from 1 to 5"
                )
            replicas = int(value)
        else:
            raise ConfigurationError(
                f"broker URL {_safe(url)!r}: unknown option {name!r} (known: {', '.join(_OPTIONS)})"
            )
    return NatsOptions(servers=tuple(servers), namespace=namespace, replicas=replicas)


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    return url.replace(parts.netloc, f"{userinfo.partition(':')[0]}:***@{hosts}", 1)
