"""Schema migrations (Alembic) for tidings' own tables and for each domain's tables.

A metadata opts in by naming its *tree* in ``MetaData.info``: a folder of Alembic revisions
(``"package:folder"`` or a path) and, optionally, the table that records how far a database
has come (``<package>_alembic_version`` unless said otherwise, so that trees sharing a
database never share a version table)::

    metadata = MetaData(info={"migrations": "person_service:migrations"})

Each tree evolves on its own, with its own version table, in the database (SQLite file) or
schema (PostgreSQL) of its domain; tidings' tree records its progress in
``tidings_alembic_version``. :func:`upgrade` (which :func:`tidings.db.create_tables` calls at
every start) brings every tree to its head, in one transaction that concurrent starts take in
turn. A metadata without a tree, or any metadata when Alembic is not installed, just gets its
missing tables created.

The first revision of every tree creates only the tables that are missing, so a database
that ``create_all`` made before migrations existed is adopted by an ordinary upgrade.

Adding a migration:

1. Change the tables (``person_service/tables.py``).
2. ``python -m tidings.migrations revision person_service.tables:metadata -m "add nickname"``
   writes ``person_service/migrations/v0002_add_nickname.py``: the difference between the
   tables and the tree's head, computed on a scratch in-memory SQLite database, written as
   batch operations so that SQLite can alter tables too (and formatted by ruff when it is
   installed).
3. Read it: autogenerate sees added and dropped columns, tables, indexes and changed types,
   not renames or data moves (write those by hand, e.g. with ``op.execute``). Commit it.

The next start of the service upgrades each database it opens. ``python -m
tidings.migrations upgrade URL module:metadata ...`` does it ahead of a deployment.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateSchema

from tidings.db import create_engine, domain_schema
from tidings.db import metadata as tidings_metadata
from tidings.errors import ConfigurationError

__all__ = ["Tree", "load_metadata", "revision", "upgrade"]

_SCRIPTS = Path(__file__).parent / "_alembic"
_LOCK_KEY = 0x74696469_6E6773
"""The PostgreSQL advisory lock that upgrades of one database take in turn ("tidings")."""

_TIDINGS_TABLE_MODULES = ("tidings.outbox.table", "tidings.listener.inbox", "tidings.subsets.guard")


@dataclass(frozen=True)
class Tree:
    """Where a metadata's revisions are, and the table recording a database's revision."""

    folder: Path
    version_table: str

    @classmethod
    def of(cls, metadata: MetaData) -> Tree | None:
        """The tree named in ``metadata.info`` (``"migrations"`` and ``"version_table"``),
        or None when it names none."""
        location = metadata.info.get("migrations")
        if location is None:
            return None
        package, sep, _ = str(location).partition(":")
        default = f"{package.replace('.', '_')}_alembic_version" if sep else "alembic_version"
        return cls(_resolve(str(location)), str(metadata.info.get("version_table", default)))


def _resolve(location: str) -> Path:
    package, sep, folder = location.partition(":")
    if not sep or Path(location).is_absolute():
        return Path(location)
    try:
        return Path(str(importlib.resources.files(package).joinpath(folder)))
    except ModuleNotFoundError:
        raise ConfigurationError(f"migrations: no package {package!r} for {location!r}") from None


def _alembic_installed() -> bool:
    return importlib.util.find_spec("alembic") is not None


async def upgrade(engine: AsyncEngine, *metadata: MetaData) -> None:
    """Bring the tables of every ``metadata`` up to date in ``engine``'s database, in one
    transaction: the engine's PostgreSQL schema is created if missing, each metadata with a
    tree is upgraded to its head, each other one gets its missing tables.

    Concurrent calls on one database take turns (PostgreSQL: an advisory lock; SQLite: the
    write lock every transaction takes), so services that start together do not race."""
    for each in metadata:
        if each is tidings_metadata:
            _import_tidings_tables()
    async with engine.begin() as conn:
        await _take_turn(conn, engine)
        for each in metadata:
            await conn.run_sync(_upgrade, each)


async def _take_turn(conn: AsyncConnection, engine: AsyncEngine) -> None:
    """On PostgreSQL: wait for other upgrades of the database, then create the schema."""
    if conn.dialect.name != "postgresql":
        return
    await conn.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
    schema = domain_schema(engine)
    if schema is not None:
        await conn.execute(CreateSchema(schema, if_not_exists=True))


def _upgrade(connection: Connection, metadata: MetaData) -> None:
    tree = Tree.of(metadata)
    if tree is None or not _alembic_installed():
        metadata.create_all(connection)
        return
    from alembic import command

    command.upgrade(_config(tree, connection, metadata), "heads")


def _config(tree: Tree, connection: Connection, metadata: MetaData) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(tree.folder))
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    config.attributes.update(
        connection=connection, metadata=metadata, version_table=tree.version_table
    )
    return config


async def revision(metadata: MetaData, message: str, *, url: str = "sqlite://") -> Path:
    """Write the next revision of ``metadata``'s tree: the difference between the tables
    and the tree's head, and return its path. ``url`` is a scratch database (it is upgraded
    to the head first); the default is an in-memory SQLite database."""
    tree = Tree.of(metadata)
    if tree is None:
        raise ConfigurationError('revision: the metadata names no tree in info["migrations"]')
    if not _alembic_installed():
        raise ConfigurationError("revision: Alembic is not installed (pip install alembic)")
    if metadata is tidings_metadata:
        _import_tidings_tables()
    tree.folder.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await _take_turn(conn, engine)
            await conn.run_sync(_upgrade, metadata)
            return await conn.run_sync(_write_revision, tree, metadata, message)
    finally:
        await engine.dispose()


def _write_revision(connection: Connection, tree: Tree, metadata: MetaData, message: str) -> Path:
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _config(tree, connection, metadata)
    _format_with_ruff(config)
    existing = sum(1 for _ in ScriptDirectory.from_config(config).walk_revisions())
    script = command.revision(config, message, autogenerate=True, rev_id=f"{existing + 1:04d}")
    if script is None or isinstance(script, list):
        raise RuntimeError("revision: Alembic wrote no single revision")
    return Path(script.path)


def _format_with_ruff(config: Any) -> None:
    """Have Alembic run ruff on the file it writes, when ruff is at hand."""
    beside = Path(sys.executable).with_name("ruff")
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    if ruff is None:
        return
    section = "post_write_hooks"
    config.set_section_option(section, "hooks", "ruff_fix, ruff_format")
    for hook, options in (("ruff_fix", "check --fix --exit-zero"), ("ruff_format", "format")):
        config.set_section_option(section, f"{hook}.type", "exec")
        config.set_section_option(section, f"{hook}.executable", ruff)
        config.set_section_option(section, f"{hook}.options", f"{options} REVISION_SCRIPT_FILENAME")


def load_metadata(reference: str) -> MetaData:
    """The metadata at ``"module:attribute"`` (e.g. ``"person_service.tables:metadata"``)."""
    module, sep, attribute = reference.partition(":")
    if not sep:
        raise ConfigurationError(f"expected module:attribute, got {reference!r}")
    found = getattr(importlib.import_module(module), attribute, None)
    if not isinstance(found, MetaData):
        raise ConfigurationError(f"{reference} is not a SQLAlchemy MetaData")
    return found


def _import_tidings_tables() -> None:
    """Register all of tidings' tables on its metadata, whichever a process imported."""
    for name in _TIDINGS_TABLE_MODULES:
        importlib.import_module(name)
