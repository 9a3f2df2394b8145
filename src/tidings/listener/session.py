"""The session a handler is given: made on first use, so that a handler that touches no
database (and runs without the inbox) costs no session at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["LazySession"]


class LazySession:
    """Stands for the :class:`AsyncSession` that ``factory`` makes, and makes it the first
    time anything of it is used (an attribute read or set, ``async with``, ``in``, ``iter``).
    Everything is passed on to that session; :attr:`made` is it, or None while unused."""

    __slots__ = ("_factory", "made")

    def __init__(self, factory: Callable[[], AsyncSession]) -> None:
        object.__setattr__(self, "_factory", factory)
        object.__setattr__(self, "made", None)

    @property
    def session(self) -> AsyncSession:
        """The session, made now if it was not yet."""
        made: AsyncSession | None = self.made
        if made is None:
            made = self._factory()
            object.__setattr__(self, "made", made)
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.session, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.session, name)

    async def __aenter__(self) -> AsyncSession:
        return await self.session.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.session.__aexit__(*exc_info)

    def __contains__(self, instance: object) -> bool:
        return instance in self.session

    def __iter__(self) -> Iterator[object]:
        return iter(self.session)

    def __repr__(self) -> str:
        return f"<LazySession of {self.made!r}>"
