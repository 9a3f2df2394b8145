"""The listener runtime: dispatch by event type, inbox, retry, dead letters, limits, pause
and graceful shutdown."""

from tidings.listener.app import Handler, Listener
from tidings.listener.inbox import inbox_table
from tidings.listener.outcomes import DeadLetter, Outcome, Retry
from tidings.listener.retry import backoff_delay
from tidings.listener.runtime import ListenerRuntime
from tidings.listener.stale import StaleNote
from tidings.listener.throttle import Gate, RateLimiter, Slots

__all__ = [
    "DeadLetter",
    "Gate",
    "Handler",
    "Listener",
    "ListenerRuntime",
    "Outcome",
    "RateLimiter",
    "Retry",
    "Slots",
    "StaleNote",
    "backoff_delay",
    "inbox_table",
]
