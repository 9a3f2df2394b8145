"""The listener runtime: consumes one subscription and settles every delivery.

A delivery is taken only when the rate limit allows one more (so that nothing waits for
the limit while its lease runs). Then, in order:

1. an event type without a handler is acknowledged and counted (``UNHANDLED``);
2. bytes that decode to no event, and events the catalog rejects, are dead-lettered at once:
   no retry can fix them;
3. in one transaction of the listener's database, the inbox row is inserted and the handler
   runs; an event already in the inbox is acknowledged without effect (``DUPLICATE``);
4. on commit the delivery is acknowledged; on failure it is retried with backoff and
   jitter, and after the subscription's ``max_attempts`` it is dead-lettered with the reason.

A delivery is acknowledged only after its effect committed, so a crash at any point loses
nothing: the broker gives the delivery back and the inbox drops what was already applied.

With a control store (:mod:`tidings.control`) the runtime follows what operators set on its
subscription: read before the first delivery is taken (so a pause outlives a restart) and
every ``control_interval`` seconds after, and it reports a heartbeat at the same pace. With
a recorder, every settle adds one trace record (in memory; the recorder writes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections import Counter
from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings import tracing
from tidings.brokers.base import Broker, Consumer, Delivery
from tidings.control import Controls, ControlStore, Recorder
from tidings.errors import ConfigurationError, EventError
from tidings.events import Event
from tidings.events.catalog import EventCatalog
from tidings.events.codecs import decode
from tidings.listener.app import Handler, Listener
from tidings.listener.control import ControlLink, Status, raise_if_cancelled
from tidings.listener.inbox import record, record_many
from tidings.listener.outcomes import DeadLetter, Outcome, Retry
from tidings.listener.retry import backoff_delay
from tidings.listener.session import LazySession
from tidings.listener.stale import StaleNote
from tidings.listener.throttle import Gate, RateLimiter, Slots
from tidings.listener.wake import Wake
from tidings.metrics import CONSUMED, DEPTH, HANDLER_SECONDS, SETTLED
from tidings.topology import Subscription

__all__ = ["ListenerRuntime"]

log = logging.getLogger("tidings.listener")

DEPTH_INTERVAL = 5.0
"""Seconds between two readings of the subscription's depth for the gauges."""


class ListenerRuntime:
    """Runs a :class:`Listener` against a broker and the listener's own database.

    ``subscription`` supplies the policies (max attempts, backoff, in-flight and rate
    limits). ``inbox=False`` drops the inbox (for handlers that are idempotent by
    themselves). :meth:`pause`, :meth:`resume`, :attr:`rate` and :meth:`stop` act on a
    running runtime. On :meth:`stop`, no new delivery is taken; those in hand get
    ``shutdown_grace`` seconds to finish, then are cancelled (their transactions roll back
    and the broker gives them back).

    ``batch_size`` trades handler concurrency for fewer transactions. With 1 (the default),
    each event has a transaction of its own and up to ``in_flight`` handlers run at once:
    right for handlers that wait on I/O. With N > 1, up to N waiting events are applied one
    after the other in one transaction, with one inbox statement, by up to
    ``ceil(in_flight / N)`` workers at once: right for handlers that only write the
    database. A batch of fewer than N starts only while no other is being applied (events
    gather while one commits). If any handler of a batch fails, the batch rolls back and
    each of its events is applied again in a transaction of its own, so a failure is
    settled for its own event only.

    With ``control``, what an operator sets on the subscription wins over :meth:`pause`,
    :meth:`resume`, :attr:`rate` and :attr:`in_flight_limit`: it is read before the first
    delivery and every ``control_interval`` seconds (see :meth:`apply_controls`). A store
    that cannot be read leaves the last controls in force (with a warning at most once a
    minute); the listener keeps working. With ``recorder``, each settle is a trace record.
    """

    def __init__(
        self,
        listener: Listener,
        *,
        broker: Broker,
        subscription: Subscription,
        sessions: async_sessionmaker[AsyncSession],
        catalog: EventCatalog | None = None,
        inbox: bool = True,
        batch_size: int = 1,
        shutdown_grace: float = 30.0,
        rng: random.Random | None = None,
        control: ControlStore | None = None,
        recorder: Recorder | None = None,
        control_interval: float = 1.0,
    ) -> None:
        if listener.subscription != subscription.name:
            raise ConfigurationError(
                f"listener is for {listener.subscription!r}, subscription is {subscription.name!r}"
            )
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if control_interval <= 0:
            raise ConfigurationError("control_interval must be above 0 seconds")
        self.listener = listener
        self.broker = broker
        self.subscription = subscription
        self.sessions = sessions
        self.catalog = catalog
        self.inbox = inbox
        self.batch_size = batch_size
        self.shutdown_grace = shutdown_grace
        self.control = control
        self.recorder = recorder
        self.control_interval = control_interval
        self.stats: Counter[Outcome] = Counter()
        self._rng = rng or random.Random()
        self._limiter = RateLimiter(subscription.rate)
        self._gate = Gate()
        self._slots = Slots(subscription.in_flight)
        self._stopping = asyncio.Event()
        self._wake = Wake()
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._forming = asyncio.Lock()
        self._more: asyncio.Future[None] | None = None
        self._short = 0
        self._applying = 0
        self._workers: list[asyncio.Task[None]] = []
        self._sources: set[_Source] = set()
        self._origin: dict[int, _Source] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._settled = 0
        self._link = ControlLink(
            subscription.name, store=control, recorder=recorder, interval=control_interval
        )
        self._consumed = CONSUMED.labels(subscription.name)
        self._settled_counts: dict[Outcome, Any] = {}
        self._handler_seconds: dict[str, Any] = {}

    @property
    def rate(self) -> float | None:
        return self._limiter.rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self._limiter.rate = value

    @property
    def paused(self) -> bool:
        return not self._gate.is_open

    @property
    def in_flight(self) -> int:
        """Deliveries taken from the broker and not yet settled."""
        return self._slots.held

    @property
    def in_flight_limit(self) -> int:
        """How many deliveries may be held at once (the subscription's ``in_flight`` unless
        changed). A change takes effect while running: a lower limit takes no delivery
        until enough are settled; a higher one adds workers and, past the consumer's
        prefetch, opens a consumer with room for it (the old one closes once what it
        handed out is settled)."""
        return self._slots.limit

    @in_flight_limit.setter
    def in_flight_limit(self, value: int) -> None:
        self._slots.limit = value
        self._interrupt()

    def pause(self) -> None:
        """Take no new deliveries until :meth:`resume`; those in hand finish."""
        if self._gate.is_open:
            self._gate.close()
            self._interrupt()

    def resume(self) -> None:
        self._gate.open()

    def stop(self) -> None:
        """Ask :meth:`run` to finish the work in hand and return."""
        self._stopping.set()
        self._interrupt()

    def apply_controls(self, controls: Controls) -> None:
        """Follow what an operator set: paused or not, and the rate and in-flight limits
        (``None``: as the subscription declares them)."""
        name = self.subscription.name
        if controls.paused != self.paused:
            log.info("paused" if controls.paused else "resumed", extra={"subscription": name})
            if controls.paused:
                self.pause()
            else:
                self.resume()
        rate = self.subscription.rate if controls.rate is None else controls.rate
        if rate != self.rate:
            log.info("rate limit %s/s", rate or "no", extra={"subscription": name})
            self.rate = rate
        limit = controls.in_flight or self.subscription.in_flight
        if limit != self.in_flight_limit:
            log.info("in-flight limit %d", limit, extra={"subscription": name})
            self.in_flight_limit = limit

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT (call from the running loop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        """Consume until :meth:`stop`."""
        wake = self._wake
        wake.clear()
        if (controls := await self._link.controls()) is not None:
            self.apply_controls(controls)
        source = self._open()
        self._grow_workers()
        background = [
            asyncio.create_task(self._report_depth()),
            asyncio.create_task(self._link.follow(self._status, self.apply_controls)),
        ]
        try:
            while not self._stopping.is_set():
                if wake.is_set:
                    wake.clear()
                    if self._slots.limit > source.prefetch:
                        source = self._reopen(source)
                    self._grow_workers()
                if not self._gate.is_open:
                    await wake.until(self._gate.wait())
                    continue
                # A consumer holds no more than its prefetch by itself: the slots matter
                # below it, and while a replaced consumer still holds deliveries.
                if self._slots.full and (
                    self._slots.limit < source.prefetch or len(self._sources) > 1
                ):
                    await wake.until(self._slots.wait())
                    continue
                if self._limiter.rate is not None and not await wake.until(self._limiter.acquire()):
                    continue
                delivery = await wake.until(source.consumer.__anext__())
                if delivery is None:
                    if wake.is_set:
                        continue
                    break  # the consumer ended
                self._slots.take()
                source.held += 1
                self._origin[id(delivery)] = source
                self._consumed.inc()
                work = await self._prepare(delivery)
                if work is not None:
                    self._queue.put_nowait(work)
                    if self._more is not None and self._queue.qsize() >= self._short:
                        self._nudge()
            await self._drain()
        finally:
            for task in background:
                task.cancel()
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*background, *self._workers, return_exceptions=True)
            self._workers.clear()
            for open_source in list(self._sources):
                self._close(open_source)
            await asyncio.gather(*self._closing, return_exceptions=True)
            if self._stopping.is_set():
                await self._link.gone()

    def _interrupt(self) -> None:
        """Wake :meth:`run` from whatever it waits for, to look at its state again."""
        self._wake.set()

    def _open(self) -> _Source:
        limit = self._slots.limit
        source = _Source(self.broker.consume(self.subscription.name, prefetch=limit), limit)
        self._sources.add(source)
        return source

    def _reopen(self, old: _Source) -> _Source:
        """A consumer with room for the new limit. The old one is closed once every delivery
        it handed out is settled; what it fetched and did not hand out goes back."""
        old.retiring = True
        if old.held == 0:
            self._close(old)
        return self._open()

    def _close(self, source: _Source) -> None:
        self._sources.discard(source)
        task = asyncio.create_task(source.consumer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _grow_workers(self) -> None:
        while len(self._workers) < -(-self._slots.limit // self.batch_size):
            self._workers.append(asyncio.create_task(self._work()))

    def _status(self) -> Status:
        return Status(in_flight=self._slots.held, settled=self._settled, paused=self.paused)

    async def _report_depth(self) -> None:
        """Keep the depth gauges of this subscription current (every few seconds)."""
        name = self.subscription.name
        while True:
            try:
                depth = await self.broker.depth(name)
            except Exception:  # noqa: BLE001 - a gauge is not worth failing the listener for
                log.debug("could not read the depth of %s", name, exc_info=True)
            else:
                for state in ("ready", "in_flight", "delayed", "dead"):
                    DEPTH.labels(name, state).set(getattr(depth, state))
            raise_if_cancelled()
            await asyncio.sleep(DEPTH_INTERVAL)

    async def _prepare(self, delivery: Delivery) -> _Work | None:
        """Settle at once what needs no handler; return the rest as work."""
        message = delivery.message
        if self.listener.handler_for(message.event_type) is None:
            await self._settle(delivery, None, Outcome.UNHANDLED)
            return None
        try:
            event = decode(message.body)
        except EventError as exc:
            await self._dead_letter(delivery, None, f"undecodable: {exc}")
            return None
        handler = self.listener.handler_for(event.event_type)
        if handler is None:
            await self._settle(delivery, event, Outcome.UNHANDLED)
            return None
        if self.catalog is not None:
            try:
                self.catalog.validate(event)
            except EventError as exc:
                await self._dead_letter(delivery, event, f"rejected: {exc}")
                return None
        return _Work(delivery, event, handler)

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch() if self.batch_size > 1 else [await self._queue.get()]
            self._applying += 1
            try:
                if len(batch) == 1 or not await self._apply_batch(batch):
                    for work in batch:
                        await self._apply_one(work)
            finally:
                self._applying -= 1
                self._nudge()
                for _ in batch:
                    self._queue.task_done()

    async def _next_batch(self) -> list[_Work]:
        """Up to ``batch_size`` waiting events. A batch that is not full is taken only while
        no other is being applied, else it waits for more events or for that one to end: so
        events that come one by one gather into a few large transactions, not many small
        ones, and none waits longer than the transaction before it."""
        async with self._forming:
            batch = [await self._queue.get()]
            while True:
                while len(batch) < self.batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                if len(batch) == self.batch_size or not self._applying:
                    return batch
                self._short = self.batch_size - len(batch)
                self._more = asyncio.get_running_loop().create_future()
                try:
                    await self._more
                finally:
                    self._more = None

    def _nudge(self) -> None:
        """Wake :meth:`_next_batch` waiting for more events or for a transaction to end."""
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    async def _apply_one(self, work: _Work) -> Outcome | None:
        delivery, event = work.delivery, work.event
        try:
            outcome = await self._transaction(work)
        except DeadLetter as exc:
            return await self._dead_letter(delivery, event, exc.reason)
        except EventError as exc:
            return await self._dead_letter(delivery, event, f"{type(exc).__name__}: {exc}")
        except Retry as exc:
            return await self._retry(delivery, event, exc.reason, exc.after)
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried
            return await self._retry(delivery, event, f"{type(exc).__name__}: {exc}", None)
        return await self._settle(delivery, event, outcome, note=work.note)

    async def _transaction(self, work: _Work) -> Outcome:
        """Run the handler (with the inbox row) in one transaction. A handler that touches
        no database, without the inbox, costs no transaction at all, nor a session: it gets
        a :class:`LazySession`, which makes one when first used."""
        lazy = LazySession(self.sessions)
        try:
            if self.inbox and not await record(
                lazy.session, self.subscription.name, str(work.event.id)
            ):
                outcome = Outcome.DUPLICATE
            else:
                made = lazy.made
                await self._handle(work, cast(AsyncSession, lazy) if made is None else made)
                outcome = Outcome.APPLIED
            session = lazy.made
            if session is not None and session.in_transaction():
                await session.commit()
            return outcome
        finally:
            session = lazy.made
            if session is not None and session.in_transaction():
                await session.close()

    async def _handle(self, work: _Work, session: AsyncSession) -> None:
        """Run the handler in ``session``, in its trace span, timed, noting what the version
        guard decided."""
        event_type = work.event.event_type
        histogram = self._handler_seconds.get(event_type)
        if histogram is None:
            histogram = HANDLER_SECONDS.labels(self.subscription.name, event_type)
            self._handler_seconds[event_type] = histogram
        note = work.note = StaleNote()
        with tracing.handling(work.delivery, work.event):
            started = perf_counter()
            try:
                with note:
                    await work.handler(work.event, session)
            finally:
                histogram.observe(max(perf_counter() - started, 0))

    async def _apply_batch(self, batch: list[_Work]) -> bool:
        """Apply ``batch`` in one transaction and settle it; False (nothing applied, nothing
        settled) when any handler failed."""
        ids = [str(w.event.id) for w in batch]
        outcomes: list[Outcome] = []
        try:
            async with self.sessions() as session, session.begin():
                new = (
                    await record_many(session, self.subscription.name, ids)
                    if self.inbox
                    else set(ids)
                )
                for work, event_id in zip(batch, ids, strict=True):
                    if event_id in new:
                        new.discard(event_id)
                        await self._handle(work, session)
                        outcomes.append(Outcome.APPLIED)
                    else:
                        outcomes.append(Outcome.DUPLICATE)
        except Exception:  # noqa: BLE001 - each event is applied again on its own
            return False
        await asyncio.gather(
            *(
                self._settle(w.delivery, w.event, outcome, note=w.note)
                for w, outcome in zip(batch, outcomes, strict=True)
            )
        )
        return True

    async def _retry(
        self, delivery: Delivery, event: Event, reason: str, after: float | None
    ) -> Outcome | None:
        if delivery.attempt >= self.subscription.max_attempts:
            return await self._dead_letter(
                delivery, event, f"{reason} (gave up after {delivery.attempt} attempts)"
            )
        delay = (
            after
            if after is not None
            else backoff_delay(self.subscription.backoff, delivery.attempt, self._rng)
        )
        _log(logging.WARNING, "retrying in %.2fs: %s", delivery, event, delay, reason)
        return await self._settle(delivery, event, Outcome.RETRIED, delay=delay, reason=reason)

    async def _dead_letter(
        self, delivery: Delivery, event: Event | None, reason: str
    ) -> Outcome | None:
        _log(logging.ERROR, "dead-lettered: %s", delivery, event, reason)
        return await self._settle(delivery, event, Outcome.DEAD_LETTERED, reason=reason)

    async def _settle(
        self,
        delivery: Delivery,
        event: Event | None,
        outcome: Outcome,
        *,
        delay: float = 0.0,
        reason: str = "",
        note: StaleNote | None = None,
    ) -> Outcome | None:
        self._slots.release()
        try:
            if outcome is Outcome.RETRIED:
                await delivery.retry(delay, reason)
            elif outcome is Outcome.DEAD_LETTERED:
                await delivery.dead_letter(reason)
            else:
                await delivery.ack()
        except Exception as exc:  # noqa: BLE001 - the broker gives unsettled deliveries back
            _log(logging.WARNING, "could not settle (%s); it will come back", delivery, event, exc)
            return None
        finally:
            self._settled_from(delivery)
        self.stats[outcome] += 1
        self._settled += 1
        counter = self._settled_counts.get(outcome)
        if counter is None:
            counter = SETTLED.labels(self.subscription.name, outcome.value)
            self._settled_counts[outcome] = counter
        counter.inc()
        self._link.settled(delivery, event, outcome, reason, note)
        if outcome in (Outcome.APPLIED, Outcome.DUPLICATE, Outcome.UNHANDLED):
            _log(logging.DEBUG, "%s", delivery, event, outcome.value)
        return outcome

    def _settled_from(self, delivery: Delivery) -> None:
        """Count ``delivery`` off its consumer, and close a replaced consumer once it holds
        no delivery any more."""
        source = self._origin.pop(id(delivery), None)
        if source is not None:
            source.held -= 1
            if source.retiring and source.held == 0 and source in self._sources:
                self._close(source)

    async def _drain(self) -> None:
        """Let the workers finish what is in hand, for up to ``shutdown_grace`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self.shutdown_grace)


@dataclass(slots=True, eq=False)
class _Work:
    delivery: Delivery
    event: Event
    handler: Handler
    note: StaleNote | None = None
    """What the version guard decided while the handler last ran."""


@dataclass(slots=True, eq=False)
class _Source:
    """A consumer and how many of its deliveries are held; a retiring one was replaced."""

    consumer: Consumer
    prefetch: int
    held: int = 0
    retiring: bool = False


def _log(level: int, msg: str, delivery: Delivery, event: Event | None, *args: Any) -> None:
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        msg,
        *args,
        extra={
            "subscription": delivery.subscription,
            "eventId": str(event.id) if event else delivery.message.id,
            "eventType": event.event_type if event else delivery.message.event_type,
            "correlationId": event.correlation_id if event else None,
            "attempt": delivery.attempt,
        },
    )
