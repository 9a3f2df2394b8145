"""Tails of the NATS broker: an ephemeral ordered push consumer on the topic's stream
(every subject ``NS.<topic>.*``, deliver policy ``new``, no acks, in memory, one replica),
as nats-py's ordered consumer runs it: it detects a gap (a lost message or a missed
heartbeat) and recreates itself from the next stream sequence, so it survives reconnects.
Closing deletes the consumer; one whose process died goes after ``_INACTIVE`` seconds."""

from __future__ import annotations

import contextlib

from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.client import JetStreamContext

from tidings.brokers.nats import codec
from tidings.brokers.nats.api import TRANSIENT, NotFound, unavailable
from tidings.brokers.nats.core import Core
from tidings.brokers.tails import QueueTail
from tidings.errors import BrokerError, UnknownTopic

__all__ = ["NatsTail"]

_INACTIVE = 30.0
"""Seconds the server keeps a tail's consumer after its subscriber went away."""
_HEARTBEAT = 5.0


class NatsTail(QueueTail):
    """See the module docstring."""

    def __init__(self, core: Core, topic: str) -> None:
        super().__init__(topic)
        self._core = core
        self._stream = core.names.topic_stream(topic)
        self._sub: JetStreamContext.PushSubscription | None = None

    async def _open(self) -> None:
        try:
            await self._core.api.stream_info(self._stream)
        except NotFound:
            raise UnknownTopic(self.topic) from None
        js = self._core.nc.jetstream(timeout=10.0)
        config = js_api.ConsumerConfig(
            description=f"tidings tail of {self.topic}", inactive_threshold=_INACTIVE
        )
        try:
            self._sub = await js.subscribe(
                self._core.names.topic_subjects(self.topic),
                stream=self._stream,
                cb=self._receive,
                config=config,
                ordered_consumer=True,
                deliver_policy=js_api.DeliverPolicy.NEW,
                idle_heartbeat=_HEARTBEAT,
            )
        except TRANSIENT as exc:
            raise unavailable(exc, f"tailing {self.topic}") from None
        except Exception as exc:
            raise BrokerError(f"NATS: cannot tail {self.topic}: {exc}") from exc

    async def _receive(self, msg: Msg) -> None:
        event_type = msg.subject.rpartition(".")[2]
        fallback = f"{self._stream}:{msg.metadata.sequence.stream}"
        message, _ = codec.decode(msg.headers, msg.data, event_type, fallback)
        self.put(message)

    async def consumer(self) -> str | None:
        """The name of the tail's consumer now, if it has one."""
        if self._sub is None:
            return None
        try:
            return (await self._sub.consumer_info()).name
        except Exception:
            return None

    async def _shut(self) -> None:
        if self._sub is None:
            return
        name = await self.consumer()
        sub, self._sub = self._sub, None
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if name is not None:
            with contextlib.suppress(BrokerError):
                await self._core.api.delete_consumer(self._stream, name)

    async def exists(self) -> bool:
        """Whether the stream has an ephemeral consumer (for tests of what a tail leaves)."""
        found = await self._core.api.call(f"CONSUMER.LIST.{self._stream}")
        return any(
            not c.get("config", {}).get("durable_name") for c in found.get("consumers") or []
        )
