from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings.listener.session import LazySession

from .conftest import effects


async def test_the_session_is_made_once_on_first_use_and_everything_reaches_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    made: list[AsyncSession] = []

    def factory() -> AsyncSession:
        made.append(sessions())
        return made[-1]

    lazy = LazySession(factory)
    assert lazy.made is None and made == []
    lazy.autoflush = False
    assert len(made) == 1 and made[0].autoflush is False and lazy.made is made[0]
    await lazy.execute(insert(effects).values(event_id="e1", entity_id="p1"))
    assert lazy.in_transaction() and made[0].in_transaction()
    await lazy.commit()
    async with lazy as session:
        assert session is made[0]
    assert len(made) == 1
    async with sessions() as check:
        assert await check.scalar(select(func.count()).select_from(effects)) == 1
