"""What can become of a delivery, and how a handler asks for a particular end.

A handler that returns normally has applied the event. To ask for something else it raises
:class:`Retry` or :class:`DeadLetter`; any other exception is a failure that is retried with
backoff until the subscription's ``max_attempts``, then dead-lettered.
"""

from __future__ import annotations

import enum

__all__ = ["DeadLetter", "Outcome", "Retry"]


class Retry(Exception):  # noqa: N818 - an outcome, not an error
    """Try this event again after ``after`` seconds (the subscription's backoff when None).
    Counts as an attempt: after the last one the event is dead-lettered."""

    def __init__(self, reason: str = "handler asked to retry", *, after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.after = after


class DeadLetter(Exception):  # noqa: N818 - an outcome, not an error
    """Give up on this event now: it goes to the dead letters with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Outcome(enum.Enum):
    """How the runtime settled one delivery."""

    APPLIED = "applied"
    """The handler ran and its transaction, with the inbox row, committed."""
    DUPLICATE = "duplicate"
    """The inbox already had this event for this subscription: acknowledged, no effect."""
    UNHANDLED = "unhandled"
    """No handler for this event type: acknowledged and counted, never retried."""
    RETRIED = "retried"
    """The handler failed (or asked to retry): delivered again after a delay."""
    DEAD_LETTERED = "dead_lettered"
    """Undecodable, schema-violating, refused by the handler, or out of attempts."""
