"""Reconciling a subset with its source: find the copies that drifted, and repair them.

Events keep a subset current, but a copy can still drift: a write by hand, a restore from
backup, an event dead-lettered and purged. :func:`reconcile` compares every copy a holder
keeps with a fresh read of its source entity and reports each field that differs; with
``fix=True`` it writes the source's values back.

What it promises:

- Each source entity is read once (:class:`~tidings.subsets.SourceClient`), then the copies
  of it are read from the holder's database, so a copy is never compared with a source read
  older than the copy itself was loaded.
- A fix writes through the subset's :class:`~tidings.subsets.VersionGuard` with the version
  the source reported, in one transaction per copy: a field whose stored version is newer
  than that read (an event applied after the read) is left as it is and reported
  :attr:`Status.NEWER`, never overwritten. An equal version may repair the value.
- A copy whose source entity is gone, or no longer lists the holder, is
  :attr:`Status.ORPHANED`; with ``fix=True`` the subset removes it the way its listener
  handles a removal, or keeps it when removing is not its to do.
- A copy that lags behind an event still in flight is reported as drifted; fixing it
  writes what the event will write again, which the guard makes harmless.
- A source that cannot be read (after a few attempts) or refuses the read stops the run
  with :class:`~tidings.errors.TidingsError`; the fixes already made stay, and a new run
  starts over safely.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tidings.db import session_factory
from tidings.errors import TidingsError
from tidings.subsets.guard import VersionGuard, subset_versions_table
from tidings.subsets.source import SourceClient, SourceRecord, SourceUnavailable

__all__ = ["Copy", "Finding", "Report", "Status", "Subset", "reconcile", "stored_versions"]

ATTEMPTS = 3
"""Reads of one source entity before an unavailable source stops the run."""


@dataclass(frozen=True)
class Copy:
    """One copy of a source entity held by a holder record.

    ``values`` are the copied fields to compare, as the source's JSON has them (dates as ISO
    strings); a field the holder keeps for itself (e.g. a name frozen by a rule) is left out.
    ``versions`` are the guard's stored versions of those fields (and of
    :data:`~tidings.subsets.MEMBERSHIP` when the subset guards membership); a stored
    version above the source's makes a difference "newer", not drift."""

    source_id: str
    holder_id: str
    values: Mapping[str, Any]
    versions: Mapping[str, int] = field(default_factory=dict)


class Subset(Protocol):
    """What :func:`reconcile` needs to know about one subset.

    ``name`` is the operator's name for it (``tenure-household-members``); ``domain`` the
    holder's domain, whose database keeps the copies; ``source`` the domain of the API the
    copies come from. Every method runs in the session given and never commits; the
    write methods run in a transaction of their own per copy.
    """

    name: str
    domain: str
    source: str

    def path(self, source_id: str) -> str:
        """The source API path of one entity (``/api/v1/persons/<id>``)."""
        ...

    async def count(self, session: AsyncSession) -> int:
        """How many copies the holder's database keeps."""
        ...

    async def sources(self, session: AsyncSession) -> list[str]:
        """The id of every source entity that has at least one copy."""
        ...

    async def copies(self, session: AsyncSession, source_id: str) -> list[Copy]:
        """Every copy of one source entity."""
        ...

    def expected(self, copy: Copy, record: SourceRecord) -> Mapping[str, Any] | None:
        """What ``copy.values`` should hold by ``record``, field by field; None when the
        source no longer holds this copy (the holder is not one of its members)."""
        ...

    async def fix(
        self,
        session: AsyncSession,
        copy: Copy,
        expected: Mapping[str, Any],
        fields: Collection[str],
        version: int,
    ) -> set[str]:
        """Write ``expected`` for ``fields`` through the guard at ``version``; return the
        fields written (a field the guard holds newer is not)."""
        ...

    async def remove(self, session: AsyncSession, copy: Copy, version: int | None) -> bool:
        """Handle an orphaned copy as the subset's listener handles a removal; ``version``
        is the source's (None when the entity is gone). True when the copy went."""
        ...


class Status(StrEnum):
    """What reconciling found for one field of a copy, or for a whole copy."""

    DRIFTED = "drifted"
    """The copy differs from the source at a version no newer than the source's; left."""
    FIXED = "fixed"
    """The copy differed; the source's value was written."""
    NEWER = "newer"
    """The copy differs because it holds a version newer than the source read; left."""
    ORPHANED = "orphaned"
    """The source entity is gone, or no longer lists the holder; the copy was kept."""
    REMOVED = "removed"
    """The copy was orphaned and has been removed."""


@dataclass(frozen=True)
class Finding:
    """One field of a copy that differs from its source (``field`` None: the whole copy,
    orphaned). ``copy`` and ``source`` are the two values (None for an orphan's source)."""

    source_id: str
    holder_id: str
    field: str | None
    copy: Any
    source: Any
    status: Status

    def to_json(self) -> dict[str, Any]:
        return {
            "sourceId": self.source_id,
            "holderId": self.holder_id,
            "field": self.field,
            "copy": self.copy,
            "source": self.source,
            "status": self.status.value,
        }


@dataclass
class Report:
    """The outcome of one run, counted by copy: ``checked`` = ``in_step`` + ``newer`` +
    ``drifted`` + ``orphaned``; ``fixed`` counts the drifted and orphaned copies that were
    repaired or removed. ``findings`` has every differing field, by source then holder."""

    subset: str
    checked: int = 0
    in_step: int = 0
    newer: int = 0
    drifted: int = 0
    orphaned: int = 0
    fixed: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        """Copies still drifted or orphaned after the run."""
        return self.drifted + self.orphaned - self.fixed

    def to_json(self) -> dict[str, Any]:
        return {
            "subset": self.subset,
            "checked": self.checked,
            "inStep": self.in_step,
            "newer": self.newer,
            "drifted": self.drifted,
            "orphaned": self.orphaned,
            "fixed": self.fixed,
            "remaining": self.remaining,
            "findings": [f.to_json() for f in self.findings],
        }


async def stored_versions(
    session: AsyncSession, guard: VersionGuard, source_id: str
) -> dict[str, dict[str, int]]:
    """Holder id -> field -> stored version, for every copy of ``source_id`` that ``guard``
    keeps versions of (what :attr:`Copy.versions` is made from)."""
    t = subset_versions_table
    rows = await session.execute(
        select(t.c.holder_id, t.c.field, t.c.version).where(
            t.c.subset == guard.subset, t.c.source_id == source_id
        )
    )
    versions: dict[str, dict[str, int]] = {}
    for holder_id, name, number in rows:
        versions.setdefault(holder_id, {})[name] = int(number)
    return versions


Progress = Callable[[int, int], None]
"""Called with (copies checked so far, copies in all) as the run advances."""


async def reconcile(
    subset: Subset,
    engine: AsyncEngine,
    source: SourceClient,
    *,
    fix: bool = False,
    concurrency: int = 4,
    progress: Progress | None = None,
) -> Report:
    """Compare every copy of ``subset`` in ``engine`` (the holder's database) with its
    source read through ``source``; with ``fix``, repair what drifted. ``concurrency``
    source entities are worked on at once."""
    if concurrency < 1:
        raise ValueError("concurrency: expected at least 1")
    readers = session_factory(engine, read_only=True)
    writers = session_factory(engine)
    async with readers() as session:
        total = await subset.count(session)
        pending = iter(await subset.sources(session))
    report = Report(subset=subset.name)
    failure: list[BaseException] = []
    if progress:
        progress(0, total)

    async def worker() -> None:
        for source_id in pending:
            if failure:
                return
            try:
                record = await _read(source, subset.path(source_id))
                async with readers() as session:
                    copies = await subset.copies(session, source_id)
                for copy in copies:
                    await _check(subset, copy, record, report, writers if fix else None)
            except Exception as exc:
                failure.append(exc)
                return
            if progress:
                progress(report.checked, max(total, report.checked))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failure:
        raise failure[0]
    report.findings.sort(key=lambda f: (f.source_id, f.holder_id))  # stable: fields keep order
    return report


async def _read(source: SourceClient, path: str) -> SourceRecord | None:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            record = await source.fetch(path, correlation_id=None)
        except SourceUnavailable as exc:
            if attempt == ATTEMPTS:
                raise
            await asyncio.sleep(min(exc.retry_after or 0.2 * 2**attempt, 5.0))
            continue
        if record is not None and record.version is None:
            raise TidingsError(f"GET {source.base_url}{path}: the source reports no version")
        return record
    raise AssertionError("unreachable")


async def _check(
    subset: Subset,
    copy: Copy,
    record: SourceRecord | None,
    report: Report,
    writers: Callable[[], AsyncSession] | None,
) -> None:
    report.checked += 1
    expected = None if record is None else subset.expected(copy, record)
    version = None if record is None else record.version
    if expected is None:
        # A stored version above the read's: the copy was (re)written after the read.
        if version is not None and max(copy.versions.values(), default=-1) > version:
            report.newer += 1
            report.findings.append(_orphan(copy, Status.NEWER))
            return
        report.orphaned += 1
        removed = False
        if writers is not None:
            async with writers() as session, session.begin():
                removed = await subset.remove(session, copy, version)
        report.fixed += removed
        report.findings.append(_orphan(copy, Status.REMOVED if removed else Status.ORPHANED))
        return
    assert version is not None
    differ = [f for f, v in expected.items() if copy.values.get(f) != v]
    drifted = [f for f in differ if copy.versions.get(f, -1) <= version]
    if not differ:
        report.in_step += 1
        return
    written: set[str] = set()
    if drifted and writers is not None:
        async with writers() as session, session.begin():
            written = await subset.fix(session, copy, expected, drifted, version)
    for name in differ:
        if name in written:
            status = Status.FIXED
        elif name in drifted and writers is None:
            status = Status.DRIFTED
        else:
            status = Status.NEWER  # held newer at the compare, or by the time of the fix
        report.findings.append(
            Finding(
                copy.source_id,
                copy.holder_id,
                name,
                copy.values.get(name),
                expected[name],
                status,
            )
        )
    if not drifted or (writers is not None and not written):
        report.newer += 1
        return
    report.drifted += 1
    report.fixed += bool(written)


def _orphan(copy: Copy, status: Status) -> Finding:
    return Finding(copy.source_id, copy.holder_id, None, dict(copy.values), None, status)
