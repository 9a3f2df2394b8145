from __future__ import annotations

import asyncio
import random

import pytest

from tidings.listener import Gate, RateLimiter, backoff_delay
from tidings.topology import Backoff


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = Backoff(initial=0.5, maximum=10, multiplier=2, jitter=0)
    delays = [backoff_delay(policy, attempt) for attempt in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_jitter_stays_within_its_band_and_varies() -> None:
    policy = Backoff(initial=4, maximum=100, multiplier=2, jitter=0.25)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 2, rng) for _ in range(200)]
    assert all(6.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 100


def test_backoff_never_exceeds_maximum_even_with_jitter() -> None:
    policy = Backoff(initial=1, maximum=3, multiplier=10, jitter=1)
    rng = random.Random(1)
    assert all(0 <= backoff_delay(policy, 5, rng) <= 3 for _ in range(100))


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_delay(Backoff(), 0)


async def test_rate_limiter_spaces_acquisitions_to_the_rate() -> None:
    limiter = RateLimiter(50.0, burst=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(11):
        await limiter.acquire()
    # 1 token up front, then 10 more at 50/s: at least 0.2 s, whatever the machine's speed.
    assert loop.time() - start >= 0.19


async def test_rate_limiter_without_rate_never_waits() -> None:
    limiter = RateLimiter(None)
    for _ in range(10_000):
        await limiter.acquire()


def test_rate_limiter_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


async def test_gate_blocks_while_closed_and_releases_on_open() -> None:
    gate = Gate()
    gate.close()
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    gate.open()
    await asyncio.wait_for(waiter, 1)
