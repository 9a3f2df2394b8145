"""The push dispatcher against real HTTP endpoints on loopback (the embedded SQLite broker):
signatures a Standard Webhooks library verifies, what each answer means, isolation between
endpoints, the circuit breaker, and an endpoint that is down for a while."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import standardwebhooks
from cloudevents.v1.http import from_http

from tidings.brokers import Broker, connect
from tidings.control import ControlStore, Recorder
from tidings.events import Event, EventData
from tidings.push import PushDispatcher, new_secret
from tidings.testing import publish_events
from tidings.topology import Backoff, Subscription, Topology

from ..conftest import free_ports
from ._webhook_receiver import Received, Receiver, Reply

SECRET = new_secret()
ENVIRON = {"HOOK_SECRET": SECRET}
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)


def push_sub(name: str, url: str, **kw: object) -> Subscription:
    options: dict[str, object] = {
        "topics": ("tenure",),
        "url": url,
        "secret_env": "HOOK_SECRET",
        "timeout": 2.0,
        "backoff": FAST,
        "max_attempts": 20,
        **kw,
    }
    return Subscription.model_validate({"name": name, **options})


def tenure_events(n: int, entities: int = 1, *, prefix: str = "t") -> list[Event]:
    return [
        Event(
            event_type="TenureUpdatedEvent",
            source_domain="Tenure",
            source_system="TenureAPI",
            entity_id=f"{prefix}{i % entities}",
            entity_version=i // entities + 1,
            event_data=EventData(new_data={"n": i}),
        )
        for i in range(n)
    ]


@dataclass
class Rig:
    broker: Broker
    store: ControlStore
    recorder: Recorder

    @asynccontextmanager
    async def dispatching(self, *subs: Subscription, **kw: object) -> AsyncIterator[PushDispatcher]:
        topology = Topology.build(["tenure"], subs)
        await self.broker.declare(topology)
        await self.store.declared(topology)
        options: dict[str, object] = {"threshold": 3, "cool_down": 0.3, "max_cool_down": 1.0}
        dispatcher = PushDispatcher(
            subs,
            broker=self.broker,
            environ=ENVIRON,
            control=self.store,
            recorder=self.recorder,
            control_interval=0.2,
            shutdown_grace=5,
            **(options | kw),  # type: ignore[arg-type]
        )
        task = asyncio.create_task(dispatcher.run())
        try:
            yield dispatcher
        finally:
            dispatcher.stop()
            await asyncio.wait_for(task, 15)

    async def publish(self, events: Iterable[Event]) -> None:
        await publish_events(self.broker, "tenure", events)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    broker = await connect(f"sqlite:///{tmp_path}/broker.db")
    async with ControlStore.open(f"sqlite+aiosqlite:///{tmp_path}/tidings.db") as store:
        recorder = Recorder(store)
        recorder.start()
        try:
            yield Rig(broker, store, recorder)
        finally:
            await recorder.close()
            await broker.close()


@pytest.fixture
def receivers() -> Iterable[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(behaviour: Callable[[Received], Reply] | None = None, *, up: bool = True) -> Receiver:
        receiver = Receiver(free_ports(), behaviour)
        made.append(receiver)
        return receiver.start() if up else receiver

    yield make
    for receiver in made:
        receiver.stop()


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def test_standard_webhooks_verifies_every_request_in_both_modes(
    rig: Rig, receivers: Callable[..., Receiver]
) -> None:
    structured, binary = receivers(), receivers()
    events = tenure_events(5, 2)
    async with rig.dispatching(
        push_sub("structured", structured.url), push_sub("binary", binary.url, mode="binary")
    ):
        await rig.publish(events)
        await until(lambda: len(structured.received) == 5 and len(binary.received) == 5)
    webhook = standardwebhooks.Webhook(SECRET)
    ids = [str(e.id) for e in events]
    for receiver in (structured, binary):
        for request in receiver.received:
            webhook.verify(request.body, request.headers, json_parse=False)
            forged = request.body.replace(b"n", b"N", 1)
            with pytest.raises(standardwebhooks.WebhookVerificationError):
                webhook.verify(forged, request.headers)
        assert sorted(receiver.ids()) == sorted(ids)
    for request in structured.received:
        assert request.headers["content-type"] == "application/cloudevents+json"
        cloud_event = from_http(request.headers, request.body)
        assert cloud_event["id"] == request.headers["webhook-id"]
        assert cloud_event["type"] == "TenureUpdatedEvent"
    for request in binary.received:
        assert request.headers["content-type"] == "application/json"
        cloud_event = from_http(request.headers, request.body)
        assert cloud_event["id"] == request.headers["webhook-id"]
        assert cloud_event["subject"].startswith("t")
        assert set(json.loads(request.body)["newData"]) == {"n"}


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_later_statuses_are_retried_until_acknowledged(
    rig: Rig, receivers: Callable[..., Receiver], status: int
) -> None:
    def twice_then_ok(request: Received) -> Reply:
        seen = endpoint.ids().count(request.headers["webhook-id"])
        return Reply(status) if seen <= 2 else Reply(200)

    endpoint = receivers(twice_then_ok)
    async with rig.dispatching(push_sub("later", endpoint.url)):
        await rig.publish(tenure_events(2, 2))
        await until(lambda: len(endpoint.received) == 6)
        await until(lambda: _depth_settled(rig, "later"))
    assert (await rig.broker.depth("later")).dead == 0
    await rig.recorder.flush()
    trace = [r for r in await rig.store.recent(limit=50) if r.subscription == "later"]
    assert [r.outcome for r in trace].count("applied") == 2
    assert sum(r.detail == f"HTTP {status}" for r in trace if r.outcome == "retried") == 4


async def test_retry_after_is_honoured(rig: Rig, receivers: Callable[..., Receiver]) -> None:
    def busy_once(request: Received) -> Reply:
        if len(endpoint.received) == 1:
            return Reply(429, {"retry-after": "1"}, b"slow down")
        return Reply(204)

    endpoint = receivers(busy_once)
    async with rig.dispatching(push_sub("polite", endpoint.url)):
        await rig.publish(tenure_events(1))
        await until(lambda: len(endpoint.received) == 2)
    first, second = endpoint.received
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not waited for"


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, b'{"error": "bad field"}'), (404, b"no such hook"), (410, b""), (301, b"moved")],
)
async def test_other_statuses_dead_letter_at_once_with_status_and_body(
    rig: Rig, receivers: Callable[..., Receiver], status: int, body: bytes
) -> None:
    target = receivers()
    endpoint = receivers(lambda _: Reply(status, {"location": target.url}, body))
    async with rig.dispatching(push_sub("refused", endpoint.url)):
        await rig.publish(tenure_events(1))
        await until(lambda: _dead(rig, "refused", 1))
        letters = await rig.broker.dead_letters("refused")
    assert len(endpoint.received) == 1 and letters[0].attempts == 1
    assert letters[0].reason.startswith(f"HTTP {status}")
    assert body.decode()[:10] in letters[0].reason
    assert target.received == [], "a redirect was followed"


async def test_large_response_bodies_are_read_only_in_part(
    rig: Rig, receivers: Callable[..., Receiver]
) -> None:
    endpoint = receivers(lambda _: Reply(400, body=b"x" * 5_000_000))
    async with rig.dispatching(push_sub("big", endpoint.url)):
        await rig.publish(tenure_events(1))
        await until(lambda: _dead(rig, "big", 1))
        (letter,) = await rig.broker.dead_letters("big")
    assert len(letter.reason) < 300


async def test_timeouts_and_refused_connections_are_retried(
    rig: Rig, receivers: Callable[..., Receiver]
) -> None:
    def slow_first(request: Received) -> Reply:
        return Reply(204, delay=1.5 if len(slow.received) == 1 else 0)

    slow = receivers(slow_first)
    down = receivers(up=False)
    async with rig.dispatching(
        push_sub("slow", slow.url, timeout=0.5), push_sub("down", down.url), threshold=1000
    ):
        await rig.publish(tenure_events(1))
        await until(lambda: len(slow.received) == 2)
        await until(lambda: _retried(rig, "down"))
        down.start()
        await until(lambda: len(down.received) == 1)
    await rig.recorder.flush()
    trace = [r for r in await rig.store.recent(limit=100) if r.outcome == "retried"]
    reasons = {r.subscription: r.detail or "" for r in trace}
    assert "timed out" in reasons["slow"]
    assert "ConnectError" in reasons["down"]


async def test_a_slow_endpoint_does_not_hold_back_another(
    rig: Rig, receivers: Callable[..., Receiver]
) -> None:
    slow = receivers(lambda _: Reply(204, delay=1.0))
    fast = receivers()
    async with rig.dispatching(
        push_sub("slow", slow.url, in_flight=2, timeout=5.0), push_sub("fast", fast.url)
    ):
        started = time.monotonic()
        await rig.publish(tenure_events(40, 40))
        await until(lambda: len(fast.received) == 40, timeout=10)
        took = time.monotonic() - started
        assert took < 2.0, f"the fast endpoint waited {took:.1f}s"
        assert len(slow.received) <= 6


async def test_the_breaker_stops_hammering_a_failing_endpoint_and_probes_it(
    rig: Rig, receivers: Callable[..., Receiver]
) -> None:
    healthy = False

    def failing(_: Received) -> Reply:
        return Reply(204) if healthy else Reply(500, body=b"down")

    endpoint = receivers(failing)
    async with rig.dispatching(
        push_sub("flaky", endpoint.url, in_flight=4, max_attempts=1000),
        threshold=3,
        cool_down=0.5,
        max_cool_down=0.5,
    ) as dispatcher:
        await rig.publish(tenure_events(30, 30))
        await asyncio.sleep(3)
        hits = len(endpoint.received)
        # Without the breaker: 4 in flight, one every 0.05-0.2 s each, for 3 s: over 60.
        assert hits <= 4 + 3 * 3, f"{hits} requests to an endpoint that keeps failing"
        assert dispatcher.runtimes["flaky"].breaker.state.value != "closed"
        healthy = True
        await until(lambda: len(set(endpoint.ids())) == 30)
        assert dispatcher.runtimes["flaky"].breaker.state.value == "closed"


async def test_an_endpoint_down_for_a_while_gets_everything_in_entity_order(
    rig: Rig, receivers: Callable[..., Receiver]
) -> None:
    endpoint = receivers(up=False)
    events = tenure_events(120, 6)
    async with rig.dispatching(
        push_sub("alerts", endpoint.url, in_flight=8, max_attempts=10),
        cool_down=0.3,
        max_cool_down=1.0,
    ):
        await rig.publish(events)
        await asyncio.sleep(4)
        assert endpoint.received == []
        endpoint.start()
        await until(lambda: len(set(endpoint.ids())) == 120, timeout=30)
        await until(lambda: _depth_settled(rig, "alerts"))
    assert (await rig.broker.depth("alerts")).dead == 0
    order: dict[str, list[int]] = {}
    seen: set[str] = set()
    for request in endpoint.received:
        event = json.loads(request.body)
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        order.setdefault(event["subject"], []).append(event["data"]["newData"]["n"])
    for entity, numbers in order.items():
        assert numbers == sorted(numbers), f"{entity} received out of order: {numbers}"


async def _depth_settled(rig: Rig, name: str) -> bool:
    return (await rig.broker.depth(name)).pending == 0


async def _dead(rig: Rig, name: str, count: int) -> bool:
    return (await rig.broker.depth(name)).dead >= count


async def _retried(rig: Rig, name: str) -> bool:
    return (await rig.broker.depth(name)).delayed >= 1
