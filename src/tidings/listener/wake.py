"""Cutting a wait short. The listener runtime waits for one thing at a time (a delivery,
the rate limit, room under the in-flight limit, the pause gate to open), and a stop, a
pause or a new limit must wake it from any of them at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

__all__ = ["Wake"]


class Wake:
    """Wakes one task from what it awaits in :meth:`until` when :meth:`set` is called.

    The awaitable runs in the waiting task itself, which :meth:`set` cancels and
    :meth:`until` uncancels (as :func:`asyncio.timeout` does): no task and no
    :func:`asyncio.wait` per wait. A cancellation from elsewhere still cancels the task.
    A :meth:`set` while the task is not in :meth:`until` only sets :attr:`is_set`, which
    the task reads before it waits again.
    """

    __slots__ = ("_cut", "_task", "_waiting", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        self._task: asyncio.Task[Any] | None = None
        self._waiting = False
        self._cut = False

    def clear(self) -> None:
        """Not set until the next :meth:`set`."""
        self.is_set = False

    def set(self) -> None:
        """Wake the task from :meth:`until` (or let it find :attr:`is_set`)."""
        if self.is_set:
            return
        self.is_set = True
        task = self._task
        if self._waiting and task is not None and task is not asyncio.current_task(task.get_loop()):
            self._cut = True
            task.cancel()

    async def until(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` unless :meth:`set` comes first (then cancel it and return
        None; when already set, it is not started). Returns True for an awaitable that
        returns None, and None for one that raises StopAsyncIteration. An awaitable that
        finishes though cut short keeps its result."""
        if self.is_set:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            else:
                asyncio.ensure_future(awaitable).cancel()
            return None
        self._task = asyncio.current_task()
        self._waiting = True
        try:
            result = await awaitable
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if self._uncut():
                return None
            raise
        finally:
            self._waiting = False
            self._uncut()
        return True if result is None else result

    def _uncut(self) -> bool:
        """Withdraw the cancellation :meth:`set` asked for, if it did; True when it did and
        nothing else asked the task to cancel."""
        task = self._task
        if not self._cut or task is None:
            return False
        self._cut = False
        return task.uncancel() == 0
