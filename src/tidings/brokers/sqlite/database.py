"""One SQLite connection on its own thread, running whole transactions at a time.

Every call of :meth:`Database.run` is one function executed on the connection's thread, so a
transaction never spans event-loop turns: the write lock is held for the time the SQL takes,
not for as long as other tasks keep the loop busy. Write transactions start with
``BEGIN IMMEDIATE`` (see :func:`immediate`), so two processes never both read and then both
try to upgrade to writing, the deadlock that SQLite can only break by failing one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tidings.errors import BrokerUnavailable, ConfigurationError

__all__ = ["BUSY_TIMEOUT", "Database", "immediate", "is_busy"]

T = TypeVar("T")

BUSY_TIMEOUT = 10.0
"""Seconds ``BEGIN IMMEDIATE`` waits for another connection's write lock."""
_PATIENCE = 30.0
"""Seconds a whole transaction is retried while the database stays busy."""
_LONGEST_PAUSE = 0.002
"""Longest sleep between two tries to take the write lock."""

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def is_busy(exc: sqlite3.Error) -> bool:
    """True when ``exc`` only says that another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "database is locked" in text or "database is busy" in text


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken up front (``BEGIN IMMEDIATE``): committed when the block
    ends, rolled back when it raises.

    While another connection writes, the lock is tried again every few hundred
    microseconds, at most ``_LONGEST_PAUSE`` apart. SQLite's own busy handler backs off to
    100 ms sleeps, and a process that keeps writing would then starve the others.
    """
    _begin(conn)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _begin(conn: sqlite3.Connection) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.0001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(pause / 2, pause))
        pause = min(pause * 2, _LONGEST_PAUSE)


class Database:
    """A connection to a SQLite file (the broker's, by default) with its own worker thread;
    ``label`` names the file in errors.

    Functions given to :meth:`run` must leave no transaction open and be safe to call again
    from the start: while another process holds the lock past ``BUSY_TIMEOUT`` they are
    retried, for up to half a minute, before :class:`BrokerUnavailable` is raised.
    """

    def __init__(
        self,
        path: Path,
        setup: Callable[[sqlite3.Connection], None],
        *,
        label: str = "sqlite broker",
    ) -> None:
        self.path = path
        self._setup = setup
        self._label = label
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidings-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> None:
        """Connect and run ``setup`` on the new connection (pragmas, schema). Raises
        :class:`ConfigurationError` when the file cannot be opened or is no database."""
        try:
            await self._submit(self._connect)
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise ConfigurationError(f"{self._label} {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            _retry_busy(lambda: self._setup(conn))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's thread and return its result."""
        if self._closed:
            raise BrokerUnavailable(f"{self._label} {self.path} is closed")
        return await self._submit(lambda: _retry_busy(lambda: fn(self._connection())))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BrokerUnavailable(f"{self._label} {self.path} is closed")
        return self._conn

    async def _submit(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except RuntimeError as exc:
            if self._closed:
                raise BrokerUnavailable(f"{self._label} {self.path} is closed") from exc
            raise
        except sqlite3.OperationalError as exc:
            if "unable to open" in str(exc):
                raise ConfigurationError(f"{self._label} {self.path}: {exc}") from exc
            raise BrokerUnavailable(f"{self._label} {self.path}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection and stop its thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(sqlite3.Error):
            await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _retry_busy(call: Callable[[], T]) -> T:
    deadline = time.monotonic() + _PATIENCE
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))
