"""``sqlite:///`` URLs: where the database file is and how hard a commit holds on to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from tidings.errors import ConfigurationError

__all__ = ["SqliteOptions", "parse_url"]

Synchronous = Literal["NORMAL", "FULL"]
_SYNCHRONOUS: tuple[Synchronous, ...] = ("NORMAL", "FULL")


@dataclass(frozen=True, slots=True)
class SqliteOptions:
    """What a ``sqlite:///`` URL says.

    ``synchronous`` is SQLite's setting of that name, in WAL mode:

    * ``NORMAL`` (default): a committed transaction survives a crash of any process, but the
      last transactions before a power loss or an operating-system crash may be lost.
    * ``FULL``: a commit is on disk before it returns, so nothing published or settled is
      lost even then; commits run at about a third of the rate.
    """

    path: Path
    synchronous: Synchronous = "NORMAL"


def parse_url(url: str) -> SqliteOptions:
    """Read ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with the query
    option ``synchronous=NORMAL|FULL``. Raises :class:`ConfigurationError` naming what is
    wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"broker URL {url!r}: expected the sqlite:/// scheme")
    if parts.netloc:
        raise ConfigurationError(
            f"broker URL {url!r}: a sqlite URL has no host; write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    raw = unquote(parts.path)
    path = raw[1:] if raw.startswith("/") else raw
    if not path or path.endswith("/"):
        raise ConfigurationError(f"broker URL {url!r}: names no database file")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"broker URL {url!r}: the sqlite broker needs a file that processes share; "
            "use memory:// for an in-process broker"
        )
    synchronous: Synchronous = "NORMAL"
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name != "synchronous":
            raise ConfigurationError(
                f"broker URL {url!r}: unknown option {name!r} (known: synchronous)"
            )
        wanted = value.upper()
        if wanted not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"broker URL {url!r}: option synchronous={value!r} must be NORMAL or FULL"
            )
        synchronous = "FULL" if wanted == "FULL" else "NORMAL"
    if parts.fragment:
        raise ConfigurationError(f"broker URL {url!r}: unexpected fragment #{parts.fragment}")
    return SqliteOptions(path=Path(path), synchronous=synchronous)
