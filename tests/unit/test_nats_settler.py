"""The NATS settler on a client that records what is published: settlements gathered across
loop turns go out in one burst, in order, confirmed by the answer to the last of each
consumer's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from tidings.brokers.nats.wire import Replies, Settler
from tidings.errors import BrokerUnavailable

A = ("stream", "a")
B = ("stream", "b")


class RecordingClient:
    """Records each publish with the loop turn it came in (nats-py writes one turn's
    publishes in one go)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, str]] = []
        self.turns: list[int] = []
        self.turn = 0

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "") -> None:
        self.published.append((subject, payload, reply))
        self.turns.append(self.turn)

    async def count_turns(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turn += 1


@pytest.fixture
async def client() -> AsyncIterator[RecordingClient]:
    client = RecordingClient()
    counting = asyncio.create_task(client.count_turns())
    yield client
    counting.cancel()


def settler_on(client: RecordingClient, timeout: float = 5.0) -> tuple[Settler, Replies]:
    nc = cast(Client, client)
    replies = Replies(nc)
    return Settler(nc, replies, timeout), replies


async def answer(replies: Replies, subject: str) -> None:
    await replies._on_reply(Msg(cast(Client, None), subject=subject))


async def published(client: RecordingClient, count: int) -> None:
    async with asyncio.timeout(2):
        while len(client.published) < count:
            await asyncio.sleep(0)


async def test_settlements_a_few_turns_apart_go_out_in_one_turn_in_order(
    client: RecordingClient,
) -> None:
    settler, replies = settler_on(client)
    settler.SPAN = 60.0  # however slow the loop turns here
    for i in range(20):
        settler.send(f"$JS.ACK.{i}", b"+ACK", A, confirm=False)
        for _ in range(2):
            await asyncio.sleep(0)
    await published(client, 20)

    assert [subject for subject, _, _ in client.published] == [f"$JS.ACK.{i}" for i in range(20)]
    assert len(set(client.turns)) == 1
    assert [bool(reply) for _, _, reply in client.published] == [False] * 19 + [True]
    await answer(replies, client.published[-1][2])
    await settler.close()


async def test_a_burst_is_confirmed_by_the_answers_to_each_consumers_last_ack(
    client: RecordingClient,
) -> None:
    settler, replies = settler_on(client)
    futures = [settler.send(f"$JS.ACK.{i}", b"+ACK", A if i < 3 else B) for i in range(5)]
    await published(client, 5)
    reply_of = {subject: reply for subject, _, reply in client.published if reply}
    assert set(reply_of) == {"$JS.ACK.2", "$JS.ACK.4"}

    await answer(replies, reply_of["$JS.ACK.2"])
    await asyncio.sleep(0.01)
    assert not any(f is not None and f.done() for f in futures)

    await answer(replies, reply_of["$JS.ACK.4"])
    async with asyncio.timeout(1):
        await asyncio.gather(*(f for f in futures if f is not None))
    await settler.close()


async def test_an_unanswered_burst_fails_every_settlement_in_it(client: RecordingClient) -> None:
    settler, _ = settler_on(client, timeout=0.05)
    futures = [settler.send(f"$JS.ACK.{i}", b"-NAK", A) for i in range(3)]
    for future in futures:
        assert future is not None
        with pytest.raises(BrokerUnavailable):
            await future
    await settler.close()


async def test_close_writes_what_is_queued_without_waiting_for_quiet_turns(
    client: RecordingClient,
) -> None:
    settler, _ = settler_on(client, timeout=0.1)
    settler.send("$JS.ACK.0", b"+ACK", A, confirm=False)
    await settler.close()
    assert [subject for subject, _, _ in client.published] == ["$JS.ACK.0"]


class BrokenClient(RecordingClient):
    """Refuses the first publish with an error no reconnect cures."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "") -> None:
        if self.broken:
            self.broken = False
            raise ValueError("payload refused")
        await super().publish(subject, payload, reply)


async def test_an_unexpected_publish_error_reaches_every_waiter_and_the_settler_goes_on() -> None:
    client = BrokenClient()
    counting = asyncio.create_task(client.count_turns())
    settler, replies = settler_on(client)
    first = settler.send("$JS.ACK.1", b"+ACK", A)
    assert first is not None
    async with asyncio.timeout(2):
        with pytest.raises(ValueError, match="payload refused"):
            await first
    second = settler.send("$JS.ACK.2", b"+ACK", A)
    assert second is not None
    await published(client, 1)
    await answer(replies, client.published[-1][2])
    async with asyncio.timeout(2):
        await second
    counting.cancel()
