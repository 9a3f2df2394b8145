"""The push dispatcher: consumes push subscriptions and POSTs each event to its endpoint.

Each push subscription is consumed by a :class:`~tidings.listener.ListenerRuntime` of its
own, with its own connection pool and circuit breaker, so that a slow or dead endpoint
holds back nothing but its own subscription. What the runtime promises holds here too:
a delivery is acknowledged only after the endpoint answered 2xx, so a crash loses nothing
(an event may then be POSTed twice: ``webhook-id`` is the event id, by which a receiver
drops repeats); retries follow the subscription's backoff and ``max_attempts``; operators
pause, throttle and redrive push subscriptions as any other; each outcome is traced.

What an answer means:

* 2xx: delivered (acknowledged);
* 408, 429, 5xx, a timeout or a connection failure: retried after ``Retry-After`` when the
  endpoint sent one, else after the subscription's backoff; a 429 or 503 with
  ``Retry-After`` also holds the whole subscription back that long;
* any other status (3xx included: redirects are not followed): dead-lettered at once, with
  the status and the start of the body as the reason.

Per-key order is the broker's: on a backend with per-key order an entity's next event is
not handed out while its previous one is unsettled or waiting for its retry, so an
endpoint receives each entity's events in order, however many are in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tidings.brokers.base import Broker
from tidings.control import Controls, ControlStore, Recorder
from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.listener import Listener, ListenerRuntime, Retry
from tidings.push.breaker import Breaker, State
from tidings.push.client import RETRYABLE, PushClient, judge
from tidings.push.request import build_request
from tidings.push.signing import secret_key, signature_headers
from tidings.topology import Subscription

__all__ = ["PushDispatcher", "PushRuntime"]

log = logging.getLogger("tidings.push")

HOLD_STATUSES = frozenset({429, 503})
"""Answers whose ``Retry-After`` holds the whole subscription back, not only the event."""


class PushRuntime(ListenerRuntime):
    """A listener runtime that also follows its endpoint's circuit breaker: while the
    breaker is open it takes no delivery (as if paused), while half open one at a time;
    otherwise what the operator set. The heartbeat reports it paused while open."""

    def __init__(self, listener: Listener, *, breaker: Breaker, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        self.breaker = breaker
        self._operator = Controls(self.subscription.name)
        breaker.on_change = self.reconsider

    def apply_controls(self, controls: Controls) -> None:
        self._operator = controls
        if self.breaker.state is State.OPEN:
            controls = dataclasses.replace(controls, paused=True)
        elif self.breaker.state is State.HALF_OPEN:
            controls = dataclasses.replace(controls, in_flight=1)
        super().apply_controls(controls)

    def reconsider(self) -> None:
        """Apply the operator's last controls again, under the breaker's new state."""
        self.apply_controls(self._operator)


class PushDispatcher:
    """Delivers every subscription of ``subscriptions`` (push subscriptions only) to its
    endpoint until :meth:`stop`.

    Signing secrets are read from ``environ`` (``os.environ`` by default) when the
    dispatcher is made: a missing or malformed one raises ConfigurationError then, not at
    the first event. ``control``, ``recorder`` and ``control_interval`` are the runtime's;
    ``threshold``, ``cool_down`` and ``max_cool_down`` configure every breaker.
    """

    def __init__(
        self,
        subscriptions: Iterable[Subscription],
        *,
        broker: Broker,
        environ: Mapping[str, str] | None = None,
        control: ControlStore | None = None,
        recorder: Recorder | None = None,
        control_interval: float = 1.0,
        shutdown_grace: float = 30.0,
        threshold: int = 5,
        cool_down: float = 1.0,
        max_cool_down: float = 30.0,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.runtimes: dict[str, PushRuntime] = {}
        self._clients: list[PushClient] = []
        sessions: async_sessionmaker[AsyncSession] = async_sessionmaker()
        for sub in subscriptions:
            if sub.url is None or sub.secret_env is None:
                raise ConfigurationError(f"{sub.name} is not a push subscription (no url)")
            secret = environ.get(sub.secret_env)
            if not secret:
                raise ConfigurationError(f"{sub.name}: {sub.secret_env} is not set")
            try:
                key = secret_key(secret)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{sub.name}: {sub.secret_env}: {exc}") from None
            client = PushClient(sub.timeout, max_connections=max(sub.in_flight, 100))
            self._clients.append(client)
            breaker = Breaker(
                f"{sub.name} ({sub.url})",
                threshold=threshold,
                cool_down=cool_down,
                max_cool_down=max_cool_down,
            )
            listener = Listener(sub.name)
            listener.on_any(_pusher(sub, key, client, breaker))
            self.runtimes[sub.name] = PushRuntime(
                listener,
                breaker=breaker,
                broker=broker,
                subscription=sub,
                sessions=sessions,
                inbox=False,
                shutdown_grace=shutdown_grace,
                control=control,
                recorder=recorder,
                control_interval=control_interval,
            )
        if not self.runtimes:
            raise ConfigurationError("no push subscriptions to dispatch")

    async def run(self) -> None:
        """Consume every subscription until :meth:`stop`; then close the connections."""
        try:
            async with asyncio.TaskGroup() as group:
                for runtime in self.runtimes.values():
                    group.create_task(runtime.run())
        finally:
            for runtime in self.runtimes.values():
                runtime.breaker.close()
            await asyncio.gather(*(c.close() for c in self._clients), return_exceptions=True)

    def stop(self) -> None:
        """Take no new deliveries; those in hand finish (within the grace period)."""
        for runtime in self.runtimes.values():
            runtime.stop()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT (call from the running loop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)


def _pusher(sub: Subscription, key: bytes, client: PushClient, breaker: Breaker) -> Any:
    """The handler that POSTs one event of ``sub`` and says what the answer means."""
    assert sub.url is not None
    url = sub.url

    async def push(event: Event, _session: AsyncSession) -> None:
        breaker.admit()
        body, headers = build_request(event, sub.mode)
        headers.update(signature_headers(key, str(event.id), body))
        try:
            answer = await client.post(url, body, headers)
        except httpx.TimeoutException as exc:
            breaker.failed()
            raise Retry(f"timed out: {exc}" if str(exc) else "timed out") from None
        except httpx.TransportError as exc:
            breaker.failed()
            raise Retry(f"{type(exc).__name__}: {exc}") from None
        if answer.status in RETRYABLE or answer.status >= 500:
            breaker.failed(answer.retry_after if answer.status in HOLD_STATUSES else None)
        else:
            breaker.succeeded()
        judge(answer)

    return push
