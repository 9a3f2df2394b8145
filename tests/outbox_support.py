"""What the outbox tests on SQLite (unit) and on PostgreSQL (integration) share."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.brokers.base import Message
from tidings.brokers.memory import MemoryBroker
from tidings.errors import BrokerUnavailable
from tidings.outbox import outbox_table

__all__ = ["FailingBroker", "published_and_claimed"]


class FailingBroker(MemoryBroker):
    """Refuses every publish after the first ``good`` ones."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        if self.good <= 0:
            raise BrokerUnavailable("connection refused")
        self.good -= 1
        await super().publish(topic, messages)


async def published_and_claimed(engine: AsyncEngine) -> tuple[int, int]:
    """How many outbox rows are marked published, and how many are claimed."""
    async with engine.connect() as conn:
        published = await conn.scalar(
            select(func.count()).where(outbox_table.c.published_at.is_not(None))
        )
        claimed = await conn.scalar(
            select(func.count()).where(outbox_table.c.claimed_by.is_not(None))
        )
    return int(published or 0), int(claimed or 0)
