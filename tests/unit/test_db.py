from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tidings.db import create_engine, session_factory
from tidings.errors import ConfigurationError


async def test_sqlite_runs_in_wal_with_the_chosen_synchronous_setting(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/a/b/domain.db", synchronous="FULL")
    async with engine.connect() as conn:
        assert (await conn.scalar(text("PRAGMA journal_mode"))) == "wal"
        assert (await conn.scalar(text("PRAGMA synchronous"))) == 2
    await engine.dispose()


async def test_writers_take_the_lock_up_front_and_readers_never_wait_for_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/domain.db"
    holder = create_engine(url)
    impatient = create_engine(url, busy_timeout_ms=100)
    async with holder.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    async with holder.begin() as writing:
        await writing.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(OperationalError, match="locked"):
            async with session_factory(impatient)() as session, session.begin():
                await session.execute(text("SELECT count(*) FROM t"))
        async with session_factory(impatient, read_only=True)() as session, session.begin():
            rows = await asyncio.wait_for(session.execute(text("SELECT count(*) FROM t")), 2)
            assert rows.scalar() == 0
    await holder.dispose()
    await impatient.dispose()


def test_bad_database_url_and_setting_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="not a valid URL"):
        create_engine("::nope::")
    with pytest.raises(ConfigurationError, match="synchronous"):
        create_engine("sqlite:///x.db", synchronous="SOMETIMES")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "mysql+aiomysql://u:p@h/db", "oracle://h/x"])
def test_a_database_tidings_does_not_run_on_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="runs on sqlite:/// and postgresql://"):
        create_engine(url)
