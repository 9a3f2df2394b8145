"""What tidings keeps in a domain's database, on a real PostgreSQL: a schema per domain in one
database, migrations, and the inbox and version-guard upserts. Every test works in schemas of
its own and drops them. The migration tests also run on SQLite, the embedded default."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Connection, MetaData, String, Table, insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateSchema

from activity_service.tables import metadata as activity_metadata
from person_service.tables import metadata as person_metadata
from tenure_service.tables import metadata as tenure_metadata
from tidings.config import Settings
from tidings.db import create_engine, create_tables, domain_schema, session_factory
from tidings.db import metadata as tidings_metadata
from tidings.errors import ConfigurationError
from tidings.events.model import utc_now
from tidings.listener.inbox import record, record_many
from tidings.migrations import revision
from tidings.outbox import outbox_table
from tidings.subsets import VersionGuard

from ..conftest import require_service

URL = "postgresql://postgres@127.0.0.1:5432/test"
TREES = [
    (person_metadata, "person_service:migrations"),
    (tenure_metadata, "tenure_service:migrations"),
    (activity_metadata, "activity_service:migrations"),
]


def with_tree(metadata: MetaData, location: str) -> MetaData:
    """A copy of a service's tables that names their migration tree."""
    copy = MetaData(info={"migrations": location})
    for table in metadata.tables.values():
        table.to_metadata(copy)
    return copy


async def drop_schemas(*names: str) -> None:
    admin = create_engine(URL)
    async with admin.begin() as conn:
        for name in names:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A random name; every schema named after it is dropped at teardown."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    admin = create_engine(URL)
    async with admin.connect() as conn:
        found = (
            await conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": f"{name}%"}
            )
        ).scalars()
        names = list(found)
    await admin.dispose()
    await drop_schemas(*names)


@pytest.fixture
async def engine(prefix: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(URL, schema=prefix)
    await create_tables(engine)
    yield engine
    await engine.dispose()


EngineFactory = Callable[[str], AsyncEngine]


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
async def engines(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    """Fresh engines, each on a database (SQLite) or schema (PostgreSQL) of its own."""
    made: list[AsyncEngine] = []
    schemas: list[str] = []
    if request.param == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)

    def make(name: str) -> AsyncEngine:
        if request.param == "postgresql":
            schemas.append(f"test_{uuid.uuid4().hex[:12]}_{name}")
            made.append(create_engine(URL, schema=schemas[-1]))
        else:
            made.append(create_engine(f"sqlite:///{tmp_path}/{name}.db"))
        return made[-1]

    yield make
    for engine in made:
        await engine.dispose()
    if schemas:
        await drop_schemas(*schemas)


def differences(connection: Connection, metadata: MetaData) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"include_name": lambda n, t, _: t != "table" or n in metadata.tables}
    )
    return list(compare_metadata(context, metadata))


async def versions(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(f"SELECT version_num FROM {table}"))).scalars())


@pytest.mark.postgres
async def test_each_domain_gets_a_schema_of_its_own_created_if_missing(prefix: str) -> None:
    settings = Settings(home=Path("unused"), broker_url="memory://", database_url=URL)
    assert settings.domain_database_url("person").endswith("/test?schema=person")
    shared = Settings(
        home=Path("unused"), broker_url="memory://", database_url=f"{URL}?schema={prefix}"
    )
    person = create_engine(shared.domain_database_url("person"))
    tenure = create_engine(shared.domain_database_url("tenure"))
    assert domain_schema(person) == f"{prefix}_person"
    for engine, metadata in ((person, person_metadata), (tenure, tenure_metadata)):
        await create_tables(engine, metadata)
    async with person.begin() as conn:
        await conn.execute(
            insert(outbox_table).values(
                event_id="e1",
                topic="person",
                event_type="PersonCreatedEvent",
                entity_id="p1",
                correlation_id="c1",
                body=b"{}",
                headers={"content-type": "application/json"},
                created_at=text("now()"),
            )
        )
    async with tenure.connect() as conn:
        assert (await conn.scalar(text("SELECT count(*) FROM tidings_outbox"))) == 0
        assert (await conn.scalar(text("SELECT current_schema()"))) == f"{prefix}_tenure"
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {
        "tidings_outbox",
        "tidings_inbox",
        "tidings_subset_versions",
        "tidings_alembic_version",
        "tenures",
        "household_members",
    } <= tables
    assert "persons" not in tables
    async with person.connect() as conn:
        assert (await conn.scalar(text("SELECT count(*) FROM tidings_outbox"))) == 1
    await person.dispose()
    await tenure.dispose()


def test_schemas_are_named_validly_and_only_for_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="only a PostgreSQL"):
        create_engine(f"sqlite:///{tmp_path}/a.db", schema="person")
    with pytest.raises(ConfigurationError, match="1 to 63 bytes"):
        create_engine(URL, schema="x" * 64)
    assert domain_schema(create_engine(f"{URL}?schema=a", schema="b")) == "b"
    assert domain_schema(create_engine(f"sqlite:///{tmp_path}/a.db")) is None
    sqlite = Settings(home=tmp_path, broker_url="memory://")
    assert sqlite.domain_database_url("person") == f"sqlite:///{tmp_path}/person.db"


@pytest.mark.postgres
async def test_services_starting_together_upgrade_their_schema_one_at_a_time(prefix: str) -> None:
    engines = [create_engine(URL, schema=prefix) for _ in range(4)]
    person = with_tree(person_metadata, "person_service:migrations")
    await asyncio.gather(*(create_tables(e, person) for e in engines))
    assert await versions(engines[0], "tidings_alembic_version") == ["0001"]
    assert await versions(engines[0], "person_service_alembic_version") == ["0001"]
    for e in engines:
        await e.dispose()


async def test_migrations_build_exactly_the_declared_tables_and_are_idempotent(
    engines: EngineFactory,
) -> None:
    engine = engines("domain")
    trees = [with_tree(metadata, location) for metadata, location in TREES]
    await create_tables(engine, *trees)
    await create_tables(engine, *trees)
    for package in ("tidings", "person_service", "tenure_service", "activity_service"):
        assert await versions(engine, f"{package}_alembic_version") == ["0001"]
    async with engine.connect() as conn:
        assert await conn.run_sync(differences, tidings_metadata) == []
        for tree in trees:
            assert await conn.run_sync(differences, tree) == []


async def test_a_database_made_before_migrations_is_adopted_with_its_rows(
    engines: EngineFactory,
) -> None:
    engine = engines("legacy")
    person = with_tree(person_metadata, "person_service:migrations")
    legacy = MetaData()
    outbox_table.to_metadata(legacy)
    person_metadata.tables["persons"].to_metadata(legacy)
    async with engine.begin() as conn:
        if (schema := domain_schema(engine)) is not None:
            await conn.execute(CreateSchema(schema))
        await conn.run_sync(legacy.create_all)
        await conn.execute(
            insert(person_metadata.tables["persons"]).values(
                id="p1",
                first_name="Ann",
                surname="Smyth",
                date_of_birth=date(1980, 2, 1),
                person_types=["Tenant"],
                version_number=1,
                created_at=utc_now(),
                updated_at=utc_now(),
            )
        )
    await create_tables(engine, person)
    assert await versions(engine, "tidings_alembic_version") == ["0001"]
    assert await versions(engine, "person_service_alembic_version") == ["0001"]
    async with engine.connect() as conn:
        assert await conn.run_sync(differences, tidings_metadata) == []
        assert await conn.run_sync(differences, person) == []
        row = (await conn.execute(select(person_metadata.tables["persons"]))).one()
    assert row.date_of_birth == date(1980, 2, 1) and row.person_types == ["Tenant"]


async def test_a_new_column_gets_a_revision_that_upgrades_existing_databases(
    engines: EngineFactory, tmp_path: Path
) -> None:
    def tables(*extra: Column[str]) -> MetaData:
        metadata = MetaData(info={"migrations": str(tmp_path / "tree")})
        Table("notes", metadata, Column("id", String(36), primary_key=True), *extra)
        return metadata

    first = await revision(tables(), "notes")
    engine = engines("notes")
    await create_tables(engine, tables())
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO notes (id) VALUES ('n1')"))
    second = await revision(tables(Column("body", String(200), nullable=True)), "note body")
    assert (first.name, second.name) == ("v0001_notes.py", "v0002_note_body.py")
    assert "add_column" in second.read_text()
    await create_tables(engine, tables(Column("body", String(200), nullable=True)))
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, body FROM notes"))).all()
        assert await conn.run_sync(differences, tables(Column("body", String(200)))) == []
    assert [tuple(r) for r in rows] == [("n1", None)]
    assert await versions(engine, "alembic_version") == ["0002"]


@pytest.mark.postgres
async def test_inbox_records_each_event_once_per_subscription(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        assert await record(session, "copy", "e1") is True
        assert await record(session, "copy", "e1") is False
        assert await record(session, "other", "e1") is True
    async with sessions() as session, session.begin():
        assert await record_many(session, "copy", ["e1", "e2", "e3"]) == {"e2", "e3"}
        assert await record_many(session, "copy", ["e2", "e3"]) == set()
    async with sessions() as session, session.begin():
        await record(session, "copy", "e9")
        await session.rollback()
    async with sessions() as session, session.begin():
        assert await record(session, "copy", "e9") is True


@pytest.mark.postgres
async def test_version_guard_upserts_and_serializes_concurrent_writers(
    engine: AsyncEngine,
) -> None:
    guard = VersionGuard("tenure.householdMembers")
    sessions = session_factory(engine)
    copy = {"source_id": "p1", "holder_id": "t1"}
    async with sessions() as session, session.begin():
        assert await guard.fresh(session, **copy, version=2, fields=["name", "dob"]) == {
            "name",
            "dob",
        }
    async with sessions() as first, sessions() as second:
        assert await guard.fresh(first, **copy, version=4, fields=["name"]) == {"name"}
        waiting = asyncio.create_task(guard.fresh(second, **copy, version=3, fields=["name"]))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the second writer waits for the first"
        await first.commit()
        assert await waiting == set(), "and then sees that v4 is newer"
        await second.commit()
    async with sessions() as session, session.begin():
        assert await guard.versions(session, **copy) == {"name": 4, "dob": 2}
        assert await guard.fresh(session, **copy, version=3, fields=["name", "dob"]) == {"dob"}
        assert await guard.forget(session, holder_id="t1") == 2
    async with sessions() as session:
        assert await guard.versions(session, **copy) == {}
