"""Exponential backoff with jitter."""

from __future__ import annotations

import random

from tidings.topology import Backoff

__all__ = ["backoff_delay"]


def backoff_delay(policy: Backoff, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based):
    ``initial * multiplier**(attempt-1)`` capped at ``maximum``, then scaled by a random factor
    in ``[1-jitter, 1+jitter]`` (never above ``maximum``, never negative)."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    exponent = min(attempt - 1, 64)
    base = min(policy.maximum, policy.initial * policy.multiplier**exponent)
    if policy.jitter:
        spread = (rng or random).uniform(-policy.jitter, policy.jitter)
        base *= 1 + spread
    return max(0.0, min(policy.maximum, base))
