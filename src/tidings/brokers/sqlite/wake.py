"""Noticing commits of other processes without spending CPU while nothing happens.

``PRAGMA data_version`` on a connection changes whenever another connection commits to the
file. Reading it costs microseconds, but waking up every few milliseconds to read it costs
more than an idle process should. So on Linux the feed also watches the write-ahead log with
inotify: every commit writes to it, and the event loop wakes when that happens. After any
activity the feed polls for a short while (a commit may become visible only after its last
write, for example after the fsync of ``synchronous=FULL``), then goes quiet again; a slow
poll remains as a safety net. Without inotify it polls quickly while there is activity and
slowly when there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ChangeFeed"]

_HOT_INTERVAL = 0.002
"""Seconds between polls shortly after activity."""
_HOT_WINDOW = 0.1
"""How long after the last change the feed keeps polling quickly (inotify available)."""
_HOT_WINDOW_POLLING = 2.0
"""The same without inotify: longer, since nothing else tells of the next change."""
_IDLE_INTERVAL = 1.0
"""Seconds between polls when quiet, with inotify as the primary signal."""
_IDLE_INTERVAL_POLLING = 0.05
"""Seconds between polls when quiet and inotify is not available."""


class ChangeFeed:
    """Calls ``on_change`` (on the event loop) soon after any connection commits to
    ``path``. A change may be reported more than once; none is left unreported for longer
    than the idle interval."""

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self._path = path
        self._on_change = on_change
        self._probe: sqlite3.Connection | None = None
        self._inotify: _Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._version = 0
        self._hot_until = 0.0

    @property
    def uses_inotify(self) -> bool:
        return self._inotify is not None

    def start(self) -> None:
        """Begin watching; call from the event loop that should receive the changes."""
        self._loop = asyncio.get_running_loop()
        self._probe = sqlite3.connect(
            self._path, timeout=0, isolation_level=None, check_same_thread=False
        )
        with contextlib.suppress(sqlite3.Error):
            self._probe.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        self._version = self._read_version()
        self._inotify = _Inotify.watch(Path(f"{self._path}-wal"))
        if self._inotify is not None:
            self._loop.add_reader(self._inotify.fd, self._on_event)
        self._hot_until = time.monotonic() + self._hot_window
        self._schedule(_HOT_INTERVAL)

    @property
    def _hot_window(self) -> float:
        return _HOT_WINDOW if self._inotify is not None else _HOT_WINDOW_POLLING

    def _on_event(self) -> None:
        if self._inotify is not None:
            self._inotify.drain()
        self._hot_until = time.monotonic() + self._hot_window
        self._check()
        self._schedule(_HOT_INTERVAL)

    def _tick(self) -> None:
        self._timer = None
        self._check()
        hot = time.monotonic() < self._hot_until
        if hot:
            self._schedule(_HOT_INTERVAL)
        else:
            self._schedule(_IDLE_INTERVAL if self._inotify else _IDLE_INTERVAL_POLLING)

    def _check(self) -> None:
        version = self._read_version()
        if version != self._version:
            self._version = version
            self._hot_until = time.monotonic() + self._hot_window
            self._on_change()

    def _read_version(self) -> int:
        if self._probe is None:
            return self._version
        try:
            return int(self._probe.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return self._version + 1

    def _schedule(self, delay: float) -> None:
        if self._loop is None:
            return
        at = self._loop.time() + delay
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._tick)

    def close(self) -> None:
        """Stop watching and close the probe connection. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self._loop = None


class _Inotify:
    """An inotify descriptor watching one file for writes (Linux only)."""

    _IN_MODIFY = 0x00000002

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def watch(cls, path: Path) -> _Inotify | None:
        """Watch ``path``; None where inotify is missing or refuses (no such file, limits)."""
        if not sys.platform.startswith("linux") or not path.exists():
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init = libc.inotify_init1
            add_watch = libc.inotify_add_watch
        except (OSError, AttributeError):
            return None
        init.argtypes = [ctypes.c_int]
        init.restype = ctypes.c_int
        add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        add_watch.restype = ctypes.c_int
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        if add_watch(fd, os.fsencode(path), cls._IN_MODIFY) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
