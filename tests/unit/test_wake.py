from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidings.listener.wake import Wake


async def never() -> None:
    await asyncio.Event().wait()


async def set_soon(wake: Wake) -> None:
    await asyncio.sleep(0.01)
    wake.set()


async def test_set_cuts_the_wait_short_and_leaves_the_task_uncancelled() -> None:
    wake = Wake()
    setter = asyncio.create_task(set_soon(wake))
    assert await wake.until(never()) is None
    await setter
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation is left pending for the next wait
    assert wake.is_set


async def test_until_gives_the_result_and_true_for_none() -> None:
    wake = Wake()

    async def value() -> str:
        await asyncio.sleep(0)
        return "delivery"

    assert await wake.until(value()) == "delivery"
    assert await wake.until(asyncio.sleep(0)) is True


async def test_an_ended_iterator_gives_none() -> None:
    async def ended() -> None:
        raise StopAsyncIteration

    assert await Wake().until(ended()) is None


async def test_a_wake_already_set_does_not_start_the_awaitable() -> None:
    started = []

    async def note() -> None:
        started.append(True)

    wake = Wake()
    wake.set()
    assert await wake.until(note()) is None
    assert started == []
    wake.clear()
    assert await wake.until(note()) is True and started == [True]


async def test_a_cancellation_from_elsewhere_still_cancels() -> None:
    wake = Wake()
    task = asyncio.create_task(wake.until(never()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_elsewhere_wins_over_a_set() -> None:
    wake = Wake()
    task = asyncio.create_task(wake.until(never()))
    await asyncio.sleep(0.01)
    task.cancel()
    wake.set()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_awaitable_that_finishes_though_cut_keeps_its_result() -> None:
    wake = Wake()

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept"
        return "never"

    async def waiter() -> tuple[Any, int]:
        result = await wake.until(stubborn())
        current = asyncio.current_task()
        assert current is not None
        return result, current.cancelling()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    wake.set()
    assert await task == ("kept", 0)
