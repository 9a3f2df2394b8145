"""Where a service finds its broker and database: the environment, with the embedded
default under one folder.

========================  ==================================================================
``TIDINGS_HOME``          the data folder of the embedded default (``./.tidings``)
``TIDINGS_BROKER``        broker URL (``sqlite:///<home>/broker.db``)
``TIDINGS_DATABASE_URL``  one database for every domain (each domain then gets its own
                          SQLite file next to it, or on PostgreSQL its own schema, named
                          after the domain, prefixed by the URL's ``?schema=`` if any, and
                          created if missing); unset:
                          ``sqlite:///<home>/<domain>.db``
========================  ==================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tidings.brokers.urls import without_password

__all__ = ["Settings"]


@dataclass(frozen=True, repr=False)
class Settings:
    """The locations one process needs."""

    home: Path
    broker_url: str
    database_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("TIDINGS_HOME") or ".tidings")
        broker = env.get("TIDINGS_BROKER") or f"sqlite:///{home}/broker.db"
        return cls(home=home, broker_url=broker, database_url=env.get("TIDINGS_DATABASE_URL"))

    def __repr__(self) -> str:
        """Without the passwords the URLs may carry."""
        database = None if self.database_url is None else without_password(self.database_url)
        return (
            f"Settings(home={self.home!r}, broker_url={without_password(self.broker_url)!r}, "
            f"database_url={database!r})"
        )

    def domain_database_url(self, domain: str) -> str:
        """The database URL of ``domain``'s own records (and its outbox and inbox).

        On PostgreSQL it is the shared database's URL with ``?schema=<domain>``, which
        :func:`tidings.db.create_engine` turns into the domain's own schema. A ``?schema=``
        already on the shared URL is a prefix (``?schema=staging`` gives ``staging_person``),
        so that several deployments can share one database."""
        if self.database_url is None:
            return f"sqlite:///{self.home}/{domain}.db"
        if self.database_url.startswith("sqlite"):
            base = self.database_url.rsplit("/", 1)[0]
            return f"{base}/{domain}.db"
        try:
            url = make_url(self.database_url)
        except ArgumentError:
            return self.database_url
        if url.get_backend_name() != "postgresql":
            return self.database_url
        prefix = url.query.get("schema")
        schema = f"{prefix}_{domain}" if isinstance(prefix, str) and prefix else domain
        return url.update_query_dict({"schema": schema}).render_as_string(hide_password=False)

    @property
    def control_database_url(self) -> str:
        """The control store of the deployment (see :mod:`tidings.control`): the database of
        a domain named ``tidings`` (``<home>/tidings.db``, or the ``tidings`` schema)."""
        return self.domain_database_url("tidings")
