"""Database engines for the domain's own database, where the outbox and inbox tables live.

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
from sqlalchemy.exc import ArgumentError
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
    "metadata",
    "session_factory",
]

Synchronous = Literal["NORMAL", "FULL"]

READ_ONLY = "tidings_read_only"

metadata = MetaData()
"""Tables tidings keeps in the domain's database (outbox, inbox)."""

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def create_engine(
    url: str, *, synchronous: Synchronous = "NORMAL", busy_timeout_ms: int = 30_000, **kw: Any
) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite:///path`` or ``postgresql://...``; an explicit
    driver such as ``sqlite+aiosqlite://`` is kept). Creates the SQLite file's folder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"database URL {url!r} is not a valid URL") from None
    driver = _DRIVERS.get(parsed.drivername, parsed.drivername)
    parsed = parsed.set(drivername=driver)
    if synchronous not in ("NORMAL", "FULL"):
        raise ConfigurationError(f"synchronous: expected NORMAL or FULL, got {synchronous!r}")
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, **kw)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed, **kw)
    _configure_sqlite(engine, synchronous, busy_timeout_ms)
    return engine


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
    """Create tidings' tables (and those of ``extra`` metadata) if missing."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        for more in extra:
            await conn.run_sync(more.create_all)
