"""The chaos suite's checker: once faults stopped and queues drained, every subset is
compared with its source of truth and the activity history with the accepted writes.

* **lost**: an accepted write missing from the history, a subset that does not hold its
  source's current value and holds no older one either, or two accepted writes of one
  entity that produced the same version (one overwrote the other);
* **duplicated_effects**: a write, or one source event, recorded more than once, or a
  write recorded that was neither accepted nor found committed unseen;
* **stale_overwrites**: a subset holding an older accepted value than its source's current.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._workload import PERSONS, TENURES, Ledger, Unit, Write


@dataclass
class Verdict:
    accepted: int = 0
    applied: int = 0
    lost: int = 0
    duplicated_effects: int = 0
    stale_overwrites: int = 0
    dead_lettered: int = 0
    max_lag_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"accepted={self.accepted} applied={self.applied} lost={self.lost} "
            f"duplicated_effects={self.duplicated_effects} "
            f"stale_overwrites={self.stale_overwrites} dead_lettered={self.dead_lettered} "
            f"max_lag_s={self.max_lag_s:.1f}"
        )

    def fault(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 20:
            self.problems.append(f"{kind}: {message}")


async def _get(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    for _ in range(50):
        try:
            r = await http.get(url)
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"GET {url} never answered 200")


async def history(http: httpx.AsyncClient, activity: str, target: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    token = None
    while True:
        url = f"{activity}/api/v1/activityhistory?targetId={target}&pageSize=100"
        page = await _get(http, url + (f"&paginationToken={token}" if token else ""))
        results += page["results"]
        token = page["paginationDetails"]["nextToken"]
        if token is None:
            return results


@dataclass
class Pair:
    """A unit as its sources and subsets show it now."""

    person: dict[str, Any]
    tenure: dict[str, Any]

    def member(self) -> dict[str, Any]:
        return next(
            (m for m in self.tenure["householdMembers"] if m["id"] == self.person["id"]), {}
        )

    def summary(self) -> dict[str, Any]:
        return next((t for t in self.person["tenures"] if t["id"] == self.tenure["id"]), {})

    def converged(self) -> bool:
        member = self.member()
        return bool(
            member.get("fullName") == self.person["fullName"]
            and member.get("dateOfBirth") == self.person["dateOfBirth"]
            and self.summary().get("paymentReference") == self.tenure["paymentReference"]
        )


async def read_pair(http: httpx.AsyncClient, person: str, tenure: str, unit: Unit) -> Pair:
    p, t = await asyncio.gather(
        _get(http, f"{person}{PERSONS}/{unit.person_id}"),
        _get(http, f"{tenure}{TENURES}/{unit.tenure_id}"),
    )
    return Pair(p, t)


async def settle_subsets(
    http: httpx.AsyncClient, person: str, tenure: str, units: list[Unit], timeout: float
) -> dict[str, Pair]:
    """Read every unit until its subsets match its sources, or ``timeout`` passes; the last
    reading of each."""
    pairs: dict[str, Pair] = {}
    pending = list(units)
    deadline = asyncio.get_running_loop().time() + timeout
    limit = asyncio.Semaphore(16)

    async def one(unit: Unit) -> None:
        async with limit:
            pairs[unit.person_id] = await read_pair(http, person, tenure, unit)

    while pending:
        await asyncio.gather(*(one(u) for u in pending))
        pending = [u for u in pending if not pairs[u.person_id].converged()]
        if not pending or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1.0)
    return pairs


async def check(
    http: httpx.AsyncClient,
    urls: dict[str, str],
    ledger: Ledger,
    units: list[Unit],
    *,
    timeout: float = 120.0,
) -> Verdict:
    """Compare subsets with sources and the history with ``ledger``."""
    verdict = Verdict(accepted=len(ledger.accepted))
    by_entity: dict[str, list[Write]] = defaultdict(list)
    for write in ledger.accepted:
        by_entity[write.entity_id].append(write)

    for entity, writes in by_entity.items():
        versions = Counter(w.version for w in writes)
        for version, n in versions.items():
            if n > 1:
                verdict.fault("lost", f"{entity}: {n} accepted writes made version {version}")

    pairs = await settle_subsets(http, urls["person"], urls["tenure"], units, timeout)
    for unit in units:
        _compare_subsets(verdict, pairs[unit.person_id], by_entity)

    limit = asyncio.Semaphore(16)

    async def one(target: str) -> list[dict[str, Any]]:
        async with limit:
            return await history(http, urls["activity"], target)

    targets = [u.person_id for u in units] + [u.tenure_id for u in units]
    histories = dict(zip(targets, await asyncio.gather(*(one(t) for t in targets)), strict=True))
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        behind = [t for t in targets if _missing(histories[t], by_entity[t])]
        if not behind:
            break
        await asyncio.sleep(1.0)
        for target, entries in zip(
            behind, await asyncio.gather(*(one(t) for t in behind)), strict=True
        ):
            histories[target] = entries
    for target in targets:
        _compare_history(verdict, target, histories[target], by_entity[target], ledger.uncertain)
    return verdict


def _missing(entries: list[dict[str, Any]], writes: list[Write]) -> bool:
    return bool({w.token for w in writes} - set(_marks(entries)))


def _compare_subsets(verdict: Verdict, pair: Pair, by_entity: dict[str, list[Write]]) -> None:
    if pair.converged():
        return
    member, summary = pair.member(), pair.summary()
    person_id, tenure_id = pair.person["id"], pair.tenure["id"]
    older_surnames = {w.fields.get("surname") for w in by_entity[person_id]}
    if member.get("fullName") != pair.person["fullName"]:
        kind = (
            "stale_overwrites"
            if str(member.get("fullName", "")).rsplit(" ", 1)[-1] in older_surnames
            else "lost"
        )
        verdict.fault(
            kind,
            f"tenure {tenure_id} member {person_id}: {member.get('fullName')!r}, "
            f"person says {pair.person['fullName']!r}",
        )
    if member.get("dateOfBirth") != pair.person["dateOfBirth"]:
        older_births = {w.fields.get("dateOfBirth") for w in by_entity[person_id]}
        verdict.fault(
            "stale_overwrites" if member.get("dateOfBirth") in older_births else "lost",
            f"tenure {tenure_id} member {person_id}: born {member.get('dateOfBirth')}, "
            f"person says {pair.person['dateOfBirth']}",
        )
    if summary.get("paymentReference") != pair.tenure["paymentReference"]:
        older = {w.token for w in by_entity[tenure_id]}
        kind = "stale_overwrites" if summary.get("paymentReference") in older else "lost"
        verdict.fault(
            kind,
            f"person {person_id} tenure {tenure_id}: {summary.get('paymentReference')!r}, "
            f"tenure says {pair.tenure['paymentReference']!r}",
        )


_MARK = {
    "PersonCreatedEvent": "surname",
    "PersonUpdatedEvent": "surname",
    "TenureCreatedEvent": "paymentReference",
    "TenureUpdatedEvent": "paymentReference",
}
"""The field whose value marks each write, by event type."""


def _marks(entries: list[dict[str, Any]]) -> Counter[str]:
    """How many times each write's mark occurs in a history."""
    return Counter(
        str((e["newData"] or {}).get(_MARK[e["eventType"]]))
        for e in entries
        if e["eventType"] in _MARK
    )


def _compare_history(
    verdict: Verdict,
    target: str,
    entries: list[dict[str, Any]],
    writes: list[Write],
    uncertain: set[str],
) -> None:
    events = Counter(e["sourceEventId"] for e in entries)
    for event_id, n in events.items():
        if n > 1:
            verdict.fault("duplicated_effects", f"{target}: event {event_id} recorded {n} times")
    marks = _marks(entries)
    for write in writes:
        seen = marks.pop(write.token, 0)
        if seen == 0:
            verdict.fault("lost", f"{write.kind} {target} {write.token}: not in the history")
        elif seen > 1:
            verdict.fault(
                "duplicated_effects", f"{write.kind} {target} {write.token}: {seen} times"
            )
        else:
            verdict.applied += 1
    for token, n in marks.items():
        if token == "None":
            continue  # updates of fields that carry no mark (a date of birth alone)
        if token not in uncertain:
            verdict.fault("duplicated_effects", f"{target}: {token} recorded, never accepted")
        elif n > 1:
            verdict.fault("duplicated_effects", f"{target}: unseen write {token}: {n} times")
