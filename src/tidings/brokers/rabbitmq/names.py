"""What the broker creates on the server: names, queue arguments and the delay tiers.

For a namespace ``NS`` (prefix ``NS.``; no prefix without one), topic ``T`` and subscription
``S``:

==========================  ===============================================================
``NS.T``                    topic exchange; routing key = event type
``NS.S``                    the subscription's queue, bound to ``NS.T`` by each event type
                            it accepts (``#`` when it accepts every type)
``NS.S.dead``               its dead letters
``NS.S.delay.<ms>``         its delay tiers: a fixed message TTL, dead-lettered back to
                            ``NS.S`` when it runs out
``NS.S.policy``             its policy record (max_attempts, in_flight, bindings)
``NS.tidings.catalog``      which topics and subscriptions the namespace holds
==========================  ===============================================================

Topic and subscription names cannot contain ``.``, so these names never collide.

Queue arguments never depend on a subscription's policy: RabbitMQ refuses to redeclare a
queue with other arguments, so a policy that lived in them could never change. Policies live
in the policy record instead, read by consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pamqp.common import FieldValue

from tidings.brokers.rabbitmq.url import QueueType

__all__ = ["DELAY_TIERS_MS", "Names", "next_hop"]

DELAY_TIERS_MS = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000,
                  300_000, 1_800_000)  # fmt: skip
"""The delay queues every subscription has, by TTL in milliseconds.

Why fixed tiers: every message in one tier waits the same time, so a tier expires strictly
in arrival order and a short delay never waits behind a long one (one delay queue with
per-message expiration only expires its head, so a 1 s retry would wait behind a 60 s one).
Tiers that never change also keep queue arguments constant and let :meth:`depth` find every
delay queue without listing the server's queues (AMQP cannot list them).

A delay that is not a tier is served in hops: the message carries its due time, waits in the
longest tier that does not overshoot it, comes back to the subscription queue, and the first
consumer to receive it before it is due parks it again (without counting an attempt). See
:func:`next_hop`.
"""

_LATE_FACTOR = 1.1
_LATE_SLACK_MS = 5.0


def next_hop(remaining_ms: float) -> int:
    """The tier (ms) a message due in ``remaining_ms`` waits in next.

    A tier at most 10 % (+5 ms) above the remaining time ends the wait in one hop; otherwise
    the longest tier below it is taken and the rest waits in later hops. A message is never
    delivered before it is due; it may be up to 10 % (+5 ms) late (up to the shortest tier,
    10 ms, for the last few milliseconds), plus the time it waits behind other messages in
    the subscription queue between hops.
    """
    for tier in DELAY_TIERS_MS:
        if remaining_ms <= tier <= remaining_ms * _LATE_FACTOR + _LATE_SLACK_MS:
            return tier
    below = [tier for tier in DELAY_TIERS_MS if tier <= remaining_ms]
    return below[-1] if below else DELAY_TIERS_MS[0]


@dataclass(frozen=True, slots=True)
class Names:
    """Server names and queue arguments for one namespace prefix and queue type."""

    prefix: str
    queue_type: QueueType

    @property
    def catalog(self) -> str:
        return f"{self.prefix}tidings.catalog"

    def exchange(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def topic_of(self, exchange: str) -> str:
        return exchange[len(self.prefix) :] if exchange.startswith(self.prefix) else exchange

    def queue(self, subscription: str) -> str:
        return f"{self.prefix}{subscription}"

    def dead(self, subscription: str) -> str:
        return f"{self.prefix}{subscription}.dead"

    def policy(self, subscription: str) -> str:
        return f"{self.prefix}{subscription}.policy"

    def delay(self, subscription: str, tier_ms: int) -> str:
        return f"{self.prefix}{subscription}.delay.{tier_ms}"

    def delays(self, subscription: str) -> list[str]:
        return [self.delay(subscription, tier) for tier in DELAY_TIERS_MS]

    def queues(self, subscription: str) -> list[str]:
        """Every queue of ``subscription``."""
        return [
            self.queue(subscription),
            self.dead(subscription),
            self.policy(subscription),
            *self.delays(subscription),
        ]

    def arguments(self) -> dict[str, FieldValue]:
        """Arguments of every queue but the delay tiers."""
        return {"x-queue-type": self.queue_type}

    def delay_arguments(self, subscription: str, tier_ms: int) -> dict[str, FieldValue]:
        """A tier: messages expire after ``tier_ms`` into the subscription queue. Quorum tiers
        dead-letter at least once (a message is not dropped if the node fails while moving
        it); that needs ``reject-publish`` overflow, which never triggers without a limit."""
        args: dict[str, FieldValue] = {
            "x-queue-type": self.queue_type,
            "x-message-ttl": tier_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue(subscription),
        }
        if self.queue_type == "quorum":
            args["x-dead-letter-strategy"] = "at-least-once"
            args["x-overflow"] = "reject-publish"
        return args
