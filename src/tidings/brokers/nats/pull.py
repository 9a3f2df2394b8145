"""Pull requests: how a consumer asks its durable consumers for messages, on one inbox.

A consumer reads one durable consumer per topic of its subscription plus the subscription's
redrive consumer, each a :class:`Source` with at most one request open. A *hot* source
answered its last request with messages: it is asked again at once with ``no_wait`` for as
many as there is room for, the room shared among the hot sources. A cold one is asked only
while a caller waits with nothing to hand out, with a long poll for one message, which turns
it hot when something arrives. So a consumer nobody iterates holds no request that could
take messages from the other consumers of its subscription, and an idle topic never holds
room a busy one needs: long polls do not reserve room, so a consumer may fetch up to one
message per source beyond its prefetch (it hands them out only as room frees).

Every request has a deadline, so one a server restart lost is replaced even if the reconnect
goes unnoticed; on reconnect all are replaced at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping

from nats.aio.client import Client

from tidings.brokers.nats.api import TRANSIENT

__all__ = ["LONG_POLL", "Puller", "Source"]

log = logging.getLogger("tidings.brokers.nats")

LONG_POLL = 5.0
"""How long a long poll waits on the server."""
GRACE = 2.0
"""How much longer to wait for a request's end before taking it as lost."""
PAUSE = 1.0
"""Wait before asking a source again after it answered with an error."""


class Source:
    """One durable consumer a subscription reads, and the one request open on it."""

    __slots__ = (
        "consumer",
        "deadline",
        "got",
        "hot",
        "index",
        "long",
        "next_subject",
        "not_before",
        "remaining",
        "request",
        "stream",
        "topic",
    )

    def __init__(self, index: int, stream: str, consumer: str, topic: str | None) -> None:
        self.index = index
        self.stream = stream
        self.consumer = consumer
        self.topic = topic
        """None for the redrive consumer: its messages name their topic in a header."""
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.request = 0
        """Id of the open request; 0 when none is open."""
        self.remaining = 0
        self.got = 0
        self.long = False
        self.deadline = 0.0
        """When to stop waiting for the open request to end (monotonic)."""
        self.hot = False
        self.not_before = 0.0


class Puller:
    """The sources of one consumer and the requests open on them; replies arrive on
    ``inbox.<source>.<request>``."""

    def __init__(self, nc: Client, inbox: str) -> None:
        self._nc = nc
        self._inbox = inbox
        self._sources: list[Source] = []
        self._by_consumer: dict[tuple[str, str], Source] = {}
        self._active: list[Source] = []
        self._requests = 0
        self._rotate = 0

    def use(self, wanted: list[tuple[str, str, str | None]]) -> None:
        """Read these ``(stream, consumer, topic)`` from now on (and no others)."""
        active = []
        for stream, consumer, topic in wanted:
            source = self._by_consumer.get((stream, consumer))
            if source is None:
                source = Source(len(self._sources), stream, consumer, topic)
                self._sources.append(source)
                self._by_consumer[(stream, consumer)] = source
            active.append(source)
        self._active = active

    def arrived(self, stream: str, consumer: str) -> Source | None:
        """A message from ``(stream, consumer)`` arrived: count it against the open request.
        Returns its source (None for a consumer this puller never read)."""
        source = self._by_consumer.get((stream, consumer))
        if source is not None and source.request:
            source.got += 1
            source.remaining -= 1
            if source.remaining <= 0:
                source.request, source.hot = 0, True
        return source

    def ended(self, subject: str, headers: Mapping[str, str]) -> bool:
        """A status message on ``subject`` ended a request (or was a heartbeat). True when it
        says the durable consumer is gone (the subscription changed)."""
        status = headers.get("Status", "")
        if status == "100":
            return False
        _, _, tail = subject.partition(self._inbox + ".")
        index, _, request = tail.partition(".")
        if not (index.isdigit() and request.isdigit()) or int(index) >= len(self._sources):
            return False
        source = self._sources[int(index)]
        if source.request != int(request):
            return False
        source.request = 0
        if status in ("404", "408"):
            source.hot = source.got > 0
            return False
        source.hot, source.not_before = False, time.monotonic() + PAUSE
        description = str(headers.get("Description", ""))
        log.debug("pull from %s: %s %s", source.next_subject, status, description)
        return "deleted" in description.lower()

    def reset(self) -> None:
        """Forget every open request (the server that had them restarted)."""
        for source in self._sources:
            source.request, source.hot = 0, False

    async def pull(self, room: int, *, demand: bool) -> None:
        """Ask hot sources for up to ``room`` messages (less what open ``no_wait`` requests
        may still bring); with ``demand``, long-poll every cold source for one."""
        now = time.monotonic()
        for source in self._active:
            if source.request and source.deadline <= now:
                source.request, source.hot = 0, False
        room -= sum(s.remaining for s in self._active if s.request and not s.long)
        if room <= 0:
            return
        self._rotate = (self._rotate + 1) % len(self._active)
        order = self._active[self._rotate :] + self._active[: self._rotate]
        hot = [s for s in order if not s.request and s.hot and s.not_before <= now]
        for i, source in enumerate(hot):
            if room <= 0:
                break
            batch = max(1, room // (len(hot) - i))
            await self._request(source, batch, None)
            room -= batch
        if demand:
            for source in order:
                if not source.request and not source.hot and source.not_before <= now:
                    await self._request(source, 1, LONG_POLL)

    def next_deadline(self, now: float) -> float:
        """When an open request must have ended, or a paused source may be asked again."""
        wake = now + LONG_POLL
        for source in self._active:
            if source.request:
                wake = min(wake, source.deadline)
            elif source.not_before > now:
                wake = min(wake, source.not_before)
        return wake

    async def _request(self, source: Source, batch: int, expires: float | None) -> None:
        self._requests += 1
        source.request, source.remaining, source.got = self._requests, batch, 0
        source.long = expires is not None
        source.deadline = time.monotonic() + (expires or 0.0) + GRACE
        body = (
            {"batch": batch, "no_wait": True}
            if expires is None
            else {"batch": batch, "expires": int(expires * 1e9)}
        )
        reply = f"{self._inbox}.{source.index}.{source.request}"
        try:
            await self._nc.publish(source.next_subject, json.dumps(body).encode(), reply=reply)
        except TRANSIENT:
            source.request, source.not_before = 0, time.monotonic() + PAUSE
