"""The chaos suite's faults: SIGKILL of a process of the running deployment (the supervisor
of ``tidings up`` restarts it), a listener paused and resumed through the ``tidings`` CLI,
a restart of the test's own broker, and poison events put on a topic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tidings.brokers import Message, connect
from tidings.events import Event, EventData, encode

API_ROLES = ("person_service api", "tenure_service api", "activity_service api")
LISTENER_ROLES = (
    "person_service listener",
    "tenure_service listener",
    "activity_service listener",
)


def children(pid: int) -> dict[int, str]:
    """The direct children of ``pid`` and their command lines."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:
                continue
            found[int(child)] = cmdline.decode()
    return found


def kill_random(supervisor_pid: int, roles: tuple[str, ...]) -> str:
    """SIGKILL one running process whose command line names one of ``roles``; return what
    was killed."""
    victims = [
        (pid, role)
        for pid, cmd in children(supervisor_pid).items()
        for role in roles
        if f"-m {role}" in cmd
    ]
    if not victims:
        return f"none of {roles} running (all restarting)"
    pid, role = random.choice(victims)
    os.kill(pid, signal.SIGKILL)
    return f"SIGKILL {role} (pid {pid})"


def tidings(*args: str) -> str:
    """Run the ``tidings`` command; its output, or an AssertionError with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"tidings {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Poison:
    """A poison event: what was sent, the subscriptions that must dead-letter it, and a
    fragment of the reason each must give."""

    name: str
    message_id: str
    dead_in: dict[str, str]


@dataclass
class PoisonSet:
    sent: list[Poison] = field(default_factory=list)
    unknown: tuple[str, str] = ("", "")
    """Event id and entity of the event of an unknown type: the history records it (the
    activity-listener takes every type), no filtered subscription takes it, none dead-letters
    it."""

    repeated: int = 0

    def check(self, letters: dict[str, list[dict[str, object]]], problems: list[str]) -> int:
        """Compare the dead letters of each subscription (``tidings dlq list --json``) with
        what was sent: every poison dead in each subscription it should be, with its reason;
        nothing else dead anywhere. Returns how many letters there are. A poison may be
        dead twice in one subscription (dead-lettering is at least once: a listener killed
        between the dead-letter publish and the ack of the delivery does it again); such
        repeats are counted in :attr:`repeated`."""
        expected = {
            (sub, p.message_id): (p.name, why) for p in self.sent for sub, why in p.dead_in.items()
        }
        seen: set[tuple[str, str]] = set()
        for sub, entries in letters.items():
            for entry in entries:
                key = (sub, str(entry["messageId"]))
                if key in seen:
                    self.repeated += 1
                    continue
                seen.add(key)
                wanted = expected.pop(key, None)
                if wanted is None:
                    problems.append(f"lost: {sub} dead-lettered a sound event: {entry}")
                elif wanted[1] not in str(entry["reason"]):
                    problems.append(f"{sub}: {wanted[0]} poison dead with {entry['reason']!r}")
        for (sub, _), (name, _) in expected.items():
            problems.append(f"{sub}: the {name} poison is not in its dead letters")
        return sum(len(entries) for entries in letters.values())


def _event(event_type: str, entity_id: str, new_data: dict[str, object]) -> Event:
    return Event(
        event_type=event_type,
        source_domain="Person",
        source_system="chaos",
        entity_id=entity_id,
        entity_version=1_000_000,
        event_data=EventData(new_data=new_data),
    )


async def inject_poison(
    broker_url: str, victim_person: str, work: Path
) -> tuple[list[Poison], tuple[str, str]]:
    """Put four poison events on the ``person`` topic:

    * bytes that decode to no event (straight on the broker: ``tidings publish`` refuses
      them), dead-lettered by every listener that takes the type;
    * a ``PersonUpdatedEvent`` whose ``dateOfBirth`` is not a date (``tidings publish``):
      the tenure-listener's catalog rejects it at once;
    * a ``PersonUpdatedEvent`` whose ``dateOfBirth`` is the number ``0``, for
      ``victim_person`` (a real person, in a real tenure): the catalog takes it (a Unix
      timestamp is a valid date in lax mode), the handler cannot write it (the column takes
      dates only) and fails on every attempt, so it is retried ``max_attempts`` times and
      then dead-lettered with the last error;
    * an event of a type no catalog knows (``tidings publish``): the history records it as
      published; no filtered subscription takes it.
    """
    sent: list[Poison] = []
    garbage = Message(
        id=str(uuid.uuid4()),
        event_type="PersonUpdatedEvent",
        key=f"poison-{uuid.uuid4().hex[:8]}",
        body=b"\xff\xfe{not an event",
    )

    async def publish_garbage() -> None:
        broker = await connect(broker_url)
        try:
            await broker.publish("person", [garbage])
        finally:
            await broker.close()

    await _patiently(publish_garbage)
    sent.append(
        Poison(
            "undecodable",
            garbage.id,
            {"tenure-listener": "undecodable", "activity-listener": "undecodable"},
        )
    )
    schema = _event("PersonUpdatedEvent", f"poison-{uuid.uuid4().hex[:8]}", {"dateOfBirth": "x"})
    failing = _event("PersonUpdatedEvent", victim_person, {"dateOfBirth": 0})
    unknown = _event("PersonTeleportedEvent", f"poison-{uuid.uuid4().hex[:8]}", {"to": "Mars"})
    for name, event in (("schema", schema), ("failing", failing), ("unknown", unknown)):
        path = work / f"poison-{name}.json"
        path.write_bytes(encode(event, "entity-event"))
        publish = ("publish", "--topic", "person", "--file", str(path), "--broker", broker_url)
        await _patiently(partial(asyncio.to_thread, tidings, *publish))
    sent.append(Poison("schema", str(schema.id), {"tenure-listener": "newData.dateOfBirth"}))
    sent.append(Poison("failing", str(failing.id), {"tenure-listener": "gave up after"}))
    return sent, (str(unknown.id), unknown.entity_id)


async def _patiently(attempt: Callable[[], Awaitable[object]], timeout: float = 60) -> None:
    """Try ``attempt`` until it succeeds (the broker may be restarting), for ``timeout``s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await attempt()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


@dataclass
class Schedule:
    """Faults run one after another, ``gap`` seconds apart, round and round until the
    workload ends. Each is logged with the time it ended (seconds since the start)."""

    steps: list[tuple[str, Callable[[], Awaitable[str]]]]
    gap: float
    log: list[str]
    started: float = field(default_factory=time.monotonic)

    async def record(self, name: str, step: Awaitable[str]) -> None:
        what = await step
        self.log.append(f"{time.monotonic() - self.started:6.1f}s {name}: {what}")

    async def run(self, done: asyncio.Event) -> None:
        self.started = time.monotonic()
        i = 0
        while not done.is_set():
            name, step = self.steps[i % len(self.steps)]
            await self.record(name, step())
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.gap)
