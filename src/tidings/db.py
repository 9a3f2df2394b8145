"""Database engines for the domain's own database, where the outbox and inbox tables live.

``postgresql://...`` (asyncpg) keeps each domain in a schema of its own when one is named,
by ``schema=`` or by the URL's ``?schema=`` (which :meth:`tidings.config.Settings.
domain_database_url` adds): every connection of the engine then has that schema alone on
its ``search_path``, so a domain sees only its own tables, and :func:`create_tables`
creates the schema if it is missing. Without a schema the server's ``search_path`` applies.

``sqlite:///path`` (aiosqlite) is the embedded default. Every SQLite connection runs in WAL
mode with a busy timeout, and every transaction starts with ``BEGIN IMMEDIATE``: processes
that share a file then queue for the write lock instead of failing with "database is
locked" when a read transaction tries to upgrade. Sessions made with
``session_factory(engine, read_only=True)`` begin with a plain ``BEGIN`` instead, so reads
never wait for writers (WAL). ``synchronous=NORMAL`` (default) keeps
every committed transaction across a process crash and may lose the last ones on power loss;
``synchronous=FULL`` does not, at about a third of the commit rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sqlalchemy import MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tidings.errors import ConfigurationError

__all__ = [
    "READ_ONLY",
    "Synchronous",
    "create_engine",
    "create_tables",
    "domain_schema",
    "metadata",
    "session_factory",
]

Synchronous = Literal["NORMAL", "FULL"]

READ_ONLY = "tidings_read_only"

_SCHEMA = "tidings_schema"

metadata = MetaData(
    info={"migrations": "tidings.migrations:_revisions", "version_table": "tidings_alembic_version"}
)
"""Tables tidings keeps in the domain's database (outbox, inbox, subset versions), migrated by
the revisions in :mod:`tidings.migrations`."""

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def create_engine(
    url: str,
    *,
    schema: str | None = None,
    synchronous: Synchronous = "NORMAL",
    busy_timeout_ms: int = 30_000,
    **kw: Any,
) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite:///path`` or ``postgresql://...``; an explicit
    driver such as ``sqlite+aiosqlite://`` is kept). Creates the SQLite file's folder.

    ``schema`` (or ``?schema=`` in a PostgreSQL URL; the argument wins) is the PostgreSQL
    schema every connection works in. Nothing connects here."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"database URL {url!r} is not a valid URL") from None
    driver = _DRIVERS.get(parsed.drivername, parsed.drivername)
    parsed = parsed.set(drivername=driver)
    if synchronous not in ("NORMAL", "FULL"):
        raise ConfigurationError(f"synchronous: expected NORMAL or FULL, got {synchronous!r}")
    if parsed.get_backend_name() == "postgresql":
        in_url = parsed.query.get("schema")
        parsed = parsed.difference_update_query(["schema"])
        chosen = schema or (in_url if isinstance(in_url, str) else None)
        if chosen is not None:
            _in_schema(chosen, kw)
        return create_async_engine(parsed, **kw)
    if schema is not None:
        raise ConfigurationError("schema: only a PostgreSQL database has schemas")
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_async_engine(parsed, **kw)
        except (ImportError, InvalidRequestError, ArgumentError) as exc:
            raise ConfigurationError(
                f"database URL: {parsed.drivername}:// cannot be used here ({exc}); tidings "
                "runs on sqlite:/// and postgresql://"
            ) from None
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed, **kw)
    _configure_sqlite(engine, synchronous, busy_timeout_ms)
    return engine


def _in_schema(schema: str, kw: dict[str, Any]) -> None:
    """Point ``create_async_engine``'s arguments at ``schema``: asyncpg sends the
    ``search_path`` with the connection's startup packet, so no statement is spent on it."""
    if not schema or len(schema.encode()) > 63 or "\x00" in schema:
        raise ConfigurationError(
            f"schema: expected a PostgreSQL name of 1 to 63 bytes, got {schema!r}"
        )
    connect_args = dict(kw.pop("connect_args", None) or {})
    settings = dict(connect_args.get("server_settings") or {})
    settings["search_path"] = '"' + schema.replace('"', '""') + '"'
    connect_args["server_settings"] = settings
    kw["connect_args"] = connect_args
    kw["execution_options"] = {**(kw.get("execution_options") or {}), _SCHEMA: schema}


def domain_schema(engine: AsyncEngine) -> str | None:
    """The PostgreSQL schema ``engine`` works in, or None (SQLite, or no schema named)."""
    schema = engine.get_execution_options().get(_SCHEMA)
    return schema if isinstance(schema, str) else None


def _configure_sqlite(engine: AsyncEngine, synchronous: str, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit. ``read_only`` sessions must not
    write; on SQLite they do not take the write lock, so reads never wait for writers."""
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return async_sessionmaker(bind, expire_on_commit=False)


async def create_tables(engine: AsyncEngine, *extra: MetaData) -> None:
    """Bring tidings' tables, and those of ``extra``, up to date; safe to call at every start.

    In one transaction that concurrent callers take in turn: the engine's PostgreSQL schema
    is created if missing, then each metadata that names a migration tree is upgraded to its
    head, and each other one gets its missing tables (see :mod:`tidings.migrations`)."""
    from tidings.migrations import upgrade

    await upgrade(engine, metadata, *extra)
