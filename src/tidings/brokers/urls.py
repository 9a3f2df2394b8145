"""Broker URLs as they may be shown: in messages, logs and printed lines."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["without_password"]


def without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***`` (every host of a
    comma-separated list keeps its place); a URL without a password is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a broker URL that cannot be parsed>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
