"""The chaos suite's client: a steady stream of creates and updates against the reference
deployment, and the ledger of every write it saw accepted.

A write is *accepted* when an API answered 2xx; its resulting entity version comes from the
``ETag``. A connection refused, a reset or a 5xx is "not accepted": the client tries again
on another instance, with ``If-Match`` holding the version it last saw, so that a write
that did commit without an answer is never made twice. A 412 then means "re-read": if the
entity already holds the write's value, the write committed unseen (it is *uncertain*: the
checker allows it in the history at most once, and never counts it as accepted).

Every update writes a value used nowhere else (``S123``, ``R123``), so the checker finds
each write in the activity history by its value.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

PERSONS = "/api/v1/persons"
TENURES = "/api/v1/tenures"


@dataclass(frozen=True)
class Write:
    """One accepted write: what it changed, the value that marks it, the entity version it
    produced and when it was accepted (monotonic seconds)."""

    kind: str  # person-create, tenure-create, person-update, tenure-update
    entity_id: str
    token: str
    version: int
    at: float
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Unit:
    """One person and the tenure that lists them, with the versions last seen."""

    person_id: str
    tenure_id: str = ""
    person_version: int = 0
    tenure_version: int = 0


@dataclass
class Ledger:
    accepted: list[Write] = field(default_factory=list)
    uncertain: set[str] = field(default_factory=set)
    """Tokens of writes that committed without the client seeing a 2xx."""
    refused: int = 0
    """Attempts that were not accepted (connection errors, 5xx) and were tried again."""
    units: list[Unit] = field(default_factory=list)

    def updates(self) -> int:
        return sum(w.kind.endswith("update") for w in self.accepted)


class GaveUp(AssertionError):
    """No API instance accepted a write within the client's patience."""


def version_of(response: httpx.Response) -> int:
    return int(response.headers["ETag"].strip('W/"'))


class Client:
    """Writes to any instance of each API (``persons``, ``tenures``: base URLs)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        persons: Sequence[str],
        tenures: Sequence[str],
        ledger: Ledger,
        *,
        patience: float = 120.0,
    ) -> None:
        self.http = http
        self.persons = list(persons)
        self.tenures = list(tenures)
        self.ledger = ledger
        self.patience = patience
        self._seq = 0

    def token(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"

    async def create_unit(self, n: int) -> Unit:
        """A person, then a tenure listing them under a misspelt name (the tenure-listener
        corrects it from the Person API)."""
        first = f"P{n}"
        surname = self.token("S")
        body: dict[str, Any] = {"firstName": first, "surname": surname, "dateOfBirth": "1980-01-01"}
        r = await self._create(self.persons, PERSONS, body)
        unit = Unit(person_id=r.json()["id"], person_version=version_of(r))
        self._accept("person-create", unit.person_id, surname, r, body)
        reference = self.token("R")
        body = {
            "paymentReference": reference,
            "startOfTenureDate": "2020-01-01",
            "householdMembers": [
                {"id": unit.person_id, "fullName": f"{first} Misspelt", "isResponsible": True}
            ],
        }
        r = await self._create(self.tenures, TENURES, body)
        unit.tenure_id = r.json()["id"]
        unit.tenure_version = version_of(r)
        self._accept("tenure-create", unit.tenure_id, reference, r, body)
        return unit

    async def update_person(self, unit: Unit, *, with_birthday: bool = False) -> Write | None:
        surname = self.token("S")
        body: dict[str, Any] = {"surname": surname}
        if with_birthday:
            body["dateOfBirth"] = f"19{50 + self._seq % 50}-0{1 + self._seq % 9}-1{self._seq % 9}"
        path = f"{PERSONS}/{unit.person_id}"
        write, unit.person_version = await self._update(
            "person-update", self.persons, path, unit.person_version, body
        )
        return write

    async def update_tenure(self, unit: Unit) -> Write | None:
        reference = self.token("R")
        body = {"paymentReference": reference}
        path = f"{TENURES}/{unit.tenure_id}"
        write, unit.tenure_version = await self._update(
            "tenure-update", self.tenures, path, unit.tenure_version, body
        )
        return write

    async def _create(self, bases: list[str], path: str, body: dict[str, Any]) -> httpx.Response:
        """POST until one instance answers 201. A create whose answer was lost may leave an
        entity nobody tracks; the checker looks only at the ones it was told of."""
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            try:
                r = await self.http.post(random.choice(bases) + path, json=body)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 201:
                return r
            if r is not None and r.status_code < 500:
                raise AssertionError(f"POST {path}: {r.status_code} {r.text}")
            self.ledger.refused += 1
            await asyncio.sleep(0.1)
        raise GaveUp(f"no instance took POST {path} within {self.patience}s")

    async def _update(
        self, kind: str, bases: list[str], path: str, version: int, body: dict[str, Any]
    ) -> tuple[Write | None, int]:
        """PATCH ``path`` with ``body`` (its first field holds the write's mark) until it is
        accepted, or found to have committed unseen; the write and the version now known."""
        mark, token = next(iter(body.items()))
        deadline = time.monotonic() + self.patience
        unsure = False
        while time.monotonic() < deadline:
            base = random.choice(bases)
            try:
                r = await self.http.patch(
                    base + path, json=body, headers={"If-Match": f'"{version}"'}
                )
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 204:
                write = self._accept(kind, path.rsplit("/", 1)[1], token, r, body)
                return write, write.version
            if r is not None and r.status_code == 412:
                current, version = await self._read(bases, path)
                if unsure and current.get(mark) == token:
                    self.ledger.uncertain.add(token)
                    return None, version
                continue
            if r is not None and r.status_code < 500:
                raise AssertionError(f"PATCH {path}: {r.status_code} {r.text}")
            unsure = True
            self.ledger.refused += 1
            await asyncio.sleep(0.1)
        raise GaveUp(f"no instance took PATCH {path} within {self.patience}s")

    async def _read(self, bases: list[str], path: str) -> tuple[dict[str, Any], int]:
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline:
            try:
                r = await self.http.get(random.choice(bases) + path)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body, version_of(r)
            await asyncio.sleep(0.1)
        raise GaveUp(f"no instance answered GET {path} within {self.patience}s")

    def _accept(
        self, kind: str, entity_id: str, token: str, r: httpx.Response, body: dict[str, Any]
    ) -> Write:
        write = Write(kind, entity_id, token, version_of(r), time.monotonic(), body)
        self.ledger.accepted.append(write)
        return write


async def stream(client: Client, units: int, updates: int, workers: int) -> None:
    """Create ``units`` people with a tenure each and make ``updates`` updates among them,
    creates spread over the run; ``workers`` writers, each with people of its own (so that
    a 412 only ever follows a write of its own whose answer was lost)."""
    ledger = client.ledger

    async def worker(w: int) -> None:
        numbers = list(range(w, units, workers))
        mine: list[Unit] = []
        share = updates // workers + (1 if w < updates % workers else 0)
        every = max(1, share // max(1, len(numbers)))
        done = 0
        while done < share or numbers:
            if numbers and (not mine or done % every == 0 or done >= share):
                unit = await client.create_unit(numbers.pop(0))
                mine.append(unit)
                ledger.units.append(unit)
                if done >= share:
                    continue
            unit = random.choice(mine)
            roll = random.random()
            if roll < 0.25:
                await client.update_tenure(unit)
            else:
                await client.update_person(unit, with_birthday=roll > 0.85)
            done += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))
