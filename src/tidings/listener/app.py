"""A listener: the handlers of one subscription, by event type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from tidings.errors import ConfigurationError
from tidings.events import Event

__all__ = ["Handler", "Listener"]

Handler = Callable[[Event, AsyncSession], Awaitable[None]]
"""Applies one event inside the session's open transaction. Return to apply; raise
:class:`~tidings.listener.outcomes.Retry` or :class:`~tidings.listener.outcomes.DeadLetter`
to ask for another end; any other exception is a failure (retried, then dead-lettered).
The session commits after the handler returns, together with the inbox row."""


class Listener:
    """Registers handlers for the event types one subscription consumes::

        listener = Listener("tenure-listener")

        @listener.on("PersonUpdatedEvent")
        async def update_members(event: Event, session: AsyncSession) -> None: ...

    Event types without a handler are acknowledged and counted, never retried, unless a
    handler for every type was set with :meth:`on_any`.
    """

    def __init__(self, subscription: str) -> None:
        self.subscription = subscription
        self._handlers: dict[str, Handler] = {}
        self._any: Handler | None = None

    def on_any(self, handler: Handler) -> Handler:
        """Decorator: ``handler`` applies events of every type without a handler of its own."""
        if self._any is not None:
            raise ConfigurationError(f"{self.subscription}: a handler for any type is set")
        self._any = handler
        return handler

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Decorator: ``handler`` applies events of each of ``event_types``."""
        if not event_types:
            raise ConfigurationError("Listener.on needs at least one event type")

        def register(handler: Handler) -> Handler:
            for event_type in event_types:
                self.add_handler(event_type, handler)
            return handler

        return register

    def add_handler(self, event_type: str, handler: Handler) -> None:
        if event_type in self._handlers:
            raise ConfigurationError(f"{self.subscription}: {event_type} already has a handler")
        self._handlers[event_type] = handler

    def handler_for(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type, self._any)

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._handlers)
