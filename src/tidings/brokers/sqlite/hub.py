"""What the consumers of one broker object share: the writer, group commit and wake-ups."""

from __future__ import annotations

from typing import Protocol

from tidings.brokers.sqlite.database import Database
from tidings.brokers.sqlite.settle import GroupCommit
from tidings.brokers.sqlite.wake import ChangeFeed

__all__ = ["Hub", "Member"]


class Member(Protocol):
    """A consumer as the hub sees it."""

    def wake(self) -> None:
        """Something may have become claimable: look again."""

    async def close(self) -> None: ...


class Hub:
    """Owns the database connection, the group commit and the change feed of one broker
    object, and wakes its consumers when a commit (here or in another process) may have made
    something claimable. The feed starts with the first consumer, so a process that only
    publishes never watches the file."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.commits = GroupCommit(db, self.notify)
        self._members: set[Member] = set()
        self._feed: ChangeFeed | None = None
        self.closed = False

    def attach(self, member: Member) -> None:
        self._members.add(member)
        if self._feed is None:
            self._feed = ChangeFeed(self.db.path, self.notify)
            self._feed.start()

    def detach(self, member: Member) -> None:
        self._members.discard(member)

    def notify(self) -> None:
        for member in list(self._members):
            member.wake()

    async def close(self) -> None:
        """Close every consumer (their unsettled deliveries go back), commit pending
        settlements, stop watching and close the connection. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for member in list(self._members):
            await member.close()
        await self.commits.close()
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        await self.db.close()
