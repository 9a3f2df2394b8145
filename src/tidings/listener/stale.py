"""What the version guard decided while one event's handler ran: the listener runtime
opens a :class:`StaleNote` around each handler call, and :func:`note_fields` (which
:class:`tidings.subsets.VersionGuard` calls) fills it, so that an event that changed nothing
because it was stale is told from one that was applied."""

from __future__ import annotations

from collections.abc import Set
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Self

__all__ = ["StaleNote", "note_fields"]

_NOTE: ContextVar[StaleNote | None] = ContextVar("tidings_stale_note", default=None)


class StaleNote:
    """What :meth:`VersionGuard.fresh` decided while this note was open (``with note:``), in
    this task and the tasks it starts: ``fresh`` the fields it let an event write, ``stale``
    those it refused because the copy held a newer version (over every copy the event
    touched). Not reentrant: open a new note for each event."""

    __slots__ = ("_token", "fresh", "stale")

    def __init__(self) -> None:
        self.fresh: set[str] = set()
        self.stale: set[str] = set()
        self._token: Token[StaleNote | None] | None = None

    @property
    def changed_nothing(self) -> bool:
        """The guard refused every field it was asked about: the event was stale."""
        return bool(self.stale) and not self.fresh

    def __enter__(self) -> Self:
        self._token = _NOTE.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _NOTE.reset(self._token)
            self._token = None


def note_fields(fresh: Set[str], stale: Set[str]) -> None:
    """Add a guard's decision to the open note, if any (else nothing happens)."""
    if (note := _NOTE.get()) is not None:
        note.fresh |= fresh
        note.stale |= stale
