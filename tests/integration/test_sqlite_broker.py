"""The SQLite broker as only it can be tested: real OS processes sharing one file, the file's
settings, its URLs, and how fast it is. The behaviour every backend shares is proved by
``tests/conformance``."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings.brokers import Broker, Delivery, Message, connect
from tidings.brokers.sqlite import SqliteBroker, parse_url
from tidings.errors import ConfigurationError
from tidings.topology import Subscription, Topology

TOPOLOGY = Topology.build(
    ["orders", "ping", "pong"],
    [
        Subscription(name="work", topics=("orders",), in_flight=50, lease_seconds=30),
        Subscription(name="pings", topics=("ping",)),
        Subscription(name="pongs", topics=("pong",)),
    ],
)

SHARE_WORK = """
import asyncio, json, sys, time
from tidings.brokers import connect

async def main(url):
    broker = await connect(url)
    got, deadline = [], time.monotonic() + 60
    async with broker.consume("work", prefetch=20) as consumer:
        print("ready", flush=True)
        while time.monotonic() < deadline:
            try:
                delivery = await asyncio.wait_for(consumer.__anext__(), 1.0)
            except TimeoutError:
                if got:
                    break
                continue
            got.append(delivery.message.id)
            await asyncio.sleep(0.0002)
            await delivery.ack()
    await broker.close()
    print(json.dumps(got), flush=True)

asyncio.run(main(sys.argv[1]))
"""

HOLD_AND_HANG = """
import asyncio, sys
from tidings.brokers import connect

async def main(url, count):
    broker = await connect(url)
    consumer = broker.consume("work", prefetch=count)
    held = [await consumer.__anext__() for _ in range(count)]
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

OPEN_AT_ONCE = """
import asyncio, sys, time
from tidings.brokers import Message, connect
from tidings.topology import Subscription, Topology

async def main(url, start, name):
    time.sleep(max(0.0, float(start) - time.time()))
    broker = await connect(url)
    await broker.declare(Topology.build(
        ["orders"], [Subscription(name="work", topics=("orders",))]))
    await broker.publish("orders", [Message(id=name, event_type="Created", key="", body=b"")])
    await broker.close()

asyncio.run(main(*sys.argv[1:]))
"""

ECHO = """
import asyncio, sys
from tidings.brokers import Message, connect

async def main(url, count):
    broker = await connect(url)
    async with broker.consume("pings") as consumer:
        print("ready", flush=True)
        for _ in range(count):
            ping = await consumer.__anext__()
            pong = Message(id=ping.message.id, event_type="Pong", key="", body=ping.message.body)
            await broker.publish("pong", [pong])
            await ping.ack()
    await broker.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.fixture
async def broker(url: str) -> AsyncIterator[Broker]:
    opened = await connect(url)
    await opened.declare(TOPOLOGY)
    try:
        yield opened
    finally:
        await opened.close()


async def spawn(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE
    )


async def wait_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"ready", line


def orders(prefix: str, count: int, keys: int = 0) -> list[Message]:
    return [
        Message(
            id=f"{prefix}-{i}",
            event_type="Created",
            key=f"k{i % keys}" if keys else "",
            body=b"x" * 200,
        )
        for i in range(count)
    ]


# URLs and settings


def test_url_names_a_relative_or_an_absolute_file() -> None:
    assert parse_url("sqlite:///data/broker.db").path == Path("data/broker.db")
    assert parse_url("sqlite:////var/lib/tidings/broker.db").path == Path(
        "/var/lib/tidings/broker.db"
    )
    assert parse_url("sqlite:///data/my%20broker.db").path == Path("data/my broker.db")
    assert parse_url("sqlite:///b.db").synchronous == "NORMAL"
    assert parse_url("sqlite:///b.db?synchronous=full").synchronous == "FULL"


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("sqlite:///b.db?synchronous=OFF", "synchronous"),
        ("sqlite:///b.db?synchronous", "synchronous"),
        ("sqlite:///b.db?journal=wal", "journal"),
        ("sqlite://host/b.db", "no host"),
        ("sqlite:///", "no database file"),
        ("sqlite:///:memory:", "memory://"),
    ],
)
async def test_bad_url_is_refused_naming_the_problem(bad: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        await SqliteBroker.open(bad)


async def test_unusable_location_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigurationError):
        await SqliteBroker.open(f"sqlite:///{tmp_path}/a-file/broker.db")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(ConfigurationError):
        await SqliteBroker.open(f"sqlite:///{tmp_path}/a-dir")
    (tmp_path / "not-a-db").write_bytes(b"just some text, not a database" * 100)
    with pytest.raises(ConfigurationError):
        await SqliteBroker.open(f"sqlite:///{tmp_path}/not-a-db")


async def test_relative_url_creates_folder_and_file_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with await SqliteBroker.open("sqlite:///data/nested/broker.db") as broker:
        await broker.declare(TOPOLOGY)
    assert (tmp_path / "data" / "nested" / "broker.db").is_file()


@pytest.mark.parametrize(("option", "level"), [("", 1), ("?synchronous=FULL", 2)])
async def test_file_uses_wal_and_the_chosen_synchronous_level(
    tmp_path: Path, option: str, level: int
) -> None:
    path = tmp_path / "broker.db"
    async with await SqliteBroker.open(f"sqlite:///{path}{option}") as broker:
        synchronous = await broker._hub.db.run(
            lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
        )
        assert synchronous == level
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        check.close()


async def test_reopening_keeps_topology_and_messages(url: str) -> None:
    first = await SqliteBroker.open(url)
    await first.declare(TOPOLOGY)
    await first.publish("orders", orders("m", 3))
    await first.close()
    async with await SqliteBroker.open(url) as second:
        assert (await second.depth("work")).ready == 3


async def test_publish_waits_for_another_writer_instead_of_failing(
    url: str, broker: Broker, tmp_path: Path
) -> None:
    locked = threading.Event()

    def hold_write_lock() -> None:
        other = sqlite3.connect(tmp_path / "broker.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(0.5)
            other.execute("COMMIT")
        finally:
            other.close()

    holder = asyncio.create_task(asyncio.to_thread(hold_write_lock))
    await asyncio.to_thread(locked.wait)
    started = time.monotonic()
    await broker.publish("orders", orders("m", 1))
    assert time.monotonic() - started >= 0.3
    await holder
    assert (await broker.depth("work")).ready == 1


async def test_cancelled_waits_neither_lose_nor_duplicate_nor_overfill_prefetch(
    broker: Broker,
) -> None:
    sent = orders("m", 60, keys=7)
    await broker.publish("orders", sent)
    got: list[str] = []
    async with broker.consume("work", prefetch=5) as consumer:
        for i in range(40):
            waiting = asyncio.create_task(consumer.__anext__())
            await asyncio.sleep(0.0002 * (i % 5))
            waiting.cancel()
            try:
                delivery = await waiting
            except asyncio.CancelledError:
                continue
            got.append(delivery.message.id)
            await delivery.ack()
            assert (await broker.depth("work")).in_flight <= 5
        while len(got) < len(sent):
            delivery = await asyncio.wait_for(consumer.__anext__(), 5)
            got.append(delivery.message.id)
            await delivery.ack()
            assert (await broker.depth("work")).in_flight <= 5
    assert sorted(got) == sorted(m.id for m in sent)
    assert (await broker.depth("work")).pending == 0


# Several processes on one file


async def test_processes_creating_the_file_at_once_all_succeed(url: str) -> None:
    start = str(time.time() + 2.0)
    procs = [await spawn(OPEN_AT_ONCE, url, start, f"p{i}") for i in range(6)]
    codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    assert codes == [0] * 6
    async with await SqliteBroker.open(url) as broker:
        consumer = broker.consume("work")
        got = [await asyncio.wait_for(consumer.__anext__(), 5) for _ in range(6)]
        await consumer.close()
    assert sorted(d.message.id for d in got) == [f"p{i}" for i in range(6)]


async def test_two_consumer_processes_share_the_work_without_duplicates(
    url: str, broker: Broker
) -> None:
    procs = [await spawn(SHARE_WORK, url) for _ in range(2)]
    try:
        for proc in procs:
            await wait_ready(proc)
        sent = orders("m", 2000, keys=50)
        for i in range(0, len(sent), 200):
            await broker.publish("orders", sent[i : i + 200])
        outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    shares = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert all(shares), [len(s) for s in shares]
    everything = [i for share in shares for i in share]
    assert len(everything) == len(set(everything)), "a message was delivered twice"
    assert set(everything) == {m.id for m in sent}
    assert (await broker.depth("work")).pending == 0


async def test_deliveries_of_a_killed_process_come_back_after_the_lease(
    url: str, broker: Broker
) -> None:
    await broker.declare(
        Topology.build(["orders"], [Subscription(name="work", topics=("orders",), lease_seconds=1)])
    )
    await broker.publish("orders", orders("m", 5))
    proc = await spawn(HOLD_AND_HANG, url, "5")
    try:
        await wait_ready(proc)
        claimed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    async with broker.consume("work") as consumer:
        first = await asyncio.wait_for(consumer.__anext__(), 10)
        waited = time.monotonic() - claimed_at
        rest = [await asyncio.wait_for(consumer.__anext__(), 5) for _ in range(4)]
        for delivery in [first, *rest]:
            await delivery.ack()
    assert 0.8 <= waited < 5, waited
    assert sorted(d.message.id for d in [first, *rest]) == [f"m-{i}" for i in range(5)]
    assert {d.attempt for d in [first, *rest]} == {2}


async def test_lease_that_ran_out_on_the_last_attempt_dead_letters_with_the_reason(
    broker: Broker,
) -> None:
    policy = Subscription(name="work", topics=("orders",), lease_seconds=0.3, max_attempts=1)
    await broker.declare(Topology.build(["orders"], [policy]))
    await broker.publish("orders", orders("m", 1))
    async with broker.consume("work") as holder, broker.consume("work") as other:
        held = await asyncio.wait_for(holder.__anext__(), 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.__anext__(), 1.0)
        [dead] = await broker.dead_letters("work")
        assert (dead.message.id, dead.attempts) == ("m-0", 1)
        assert "lease of 0.3s expired" in dead.reason
        await held.ack()  # too late: changes nothing
    assert [d.message.id for d in await broker.dead_letters("work")] == ["m-0"]


async def test_publisher_and_consumer_processes_see_each_other_within_milliseconds(
    url: str, broker: Broker
) -> None:
    rounds = 10
    proc = await spawn(ECHO, url, str(rounds))
    trips: list[float] = []
    try:
        await wait_ready(proc)
        async with broker.consume("pongs") as pongs:
            for i in range(rounds):
                await asyncio.sleep(0.25)  # let both sides fall quiet
                sent = time.monotonic()
                ping = Message(id=f"p{i}", event_type="Ping", key="", body=b"")
                await broker.publish("ping", [ping])
                pong = await asyncio.wait_for(pongs.__anext__(), 5)
                trips.append(time.monotonic() - sent)
                assert pong.message.id == f"p{i}"
                await pong.ack()
        await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0
    # Two hand-overs between processes per round trip; a few ms each is the target.
    assert statistics.median(trips) < 0.05, trips


# Costs


async def test_idle_consumer_costs_next_to_no_cpu(broker: Broker) -> None:
    consumer = broker.consume("work")
    waiting = asyncio.create_task(consumer.__anext__())
    await asyncio.sleep(0.5)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.sleep(2.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    waiting.cancel()
    await consumer.close()
    assert cpu / (time.monotonic() - started) < 0.02


async def test_throughput_smoke(broker: Broker) -> None:
    count = 5000
    sent = orders("m", count, keys=100)
    started = time.perf_counter()
    for i in range(0, count, 500):
        await broker.publish("orders", sent[i : i + 500])
    publish_rate = count / (time.perf_counter() - started)

    done = asyncio.Event()
    acked = 0

    async def handle(delivery: Delivery) -> None:
        nonlocal acked
        await delivery.ack()
        acked += 1
        if acked == count:
            done.set()

    started = time.perf_counter()
    handlers: set[asyncio.Task[None]] = set()
    async with broker.consume("work", prefetch=256) as consumer:

        async def pump() -> None:
            async for delivery in consumer:
                task = asyncio.create_task(handle(delivery))
                handlers.add(task)
                task.add_done_callback(handlers.discard)

        pumping = asyncio.create_task(pump())
        await asyncio.wait_for(done.wait(), 60)
        pumping.cancel()
    consume_rate = count / (time.perf_counter() - started)
    print(f"publish {publish_rate:.0f}/s, consume+ack {consume_rate:.0f}/s")
    assert publish_rate > 2000
    assert consume_rate > 1000


async def test_long_line_of_one_key_is_consumed_in_order_without_slowing_down(
    broker: Broker,
) -> None:
    sent = orders("m", 3000, keys=1)
    for i in range(0, len(sent), 500):
        await broker.publish("orders", sent[i : i + 500])
    started = time.perf_counter()
    got: list[str] = []
    async with broker.consume("work") as consumer:
        while len(got) < len(sent):
            delivery = await asyncio.wait_for(consumer.__anext__(), 5)
            got.append(delivery.message.id)
            await delivery.ack()
    assert got == [m.id for m in sent]
    assert time.perf_counter() - started < 15
