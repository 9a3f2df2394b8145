"""Every name the NATS broker creates on the server, derived from one namespace.

=========================  ======================================  ========================
stream                     subjects                                retention
=========================  ======================================  ========================
``NS_<topic>``             ``NS.<topic>.<eventType>``              limits (7 days)
``NS__redrive``            ``NS._redrive.<subscription>``          limits (7 days)
``NS__dead``               ``NS._dead.<subscription>``             limits (kept until
                                                                   redriven or purged)
``NS__subscriptions``      ``NS._subscription.<subscription>``     last record per subject
=========================  ======================================  ========================

Durable consumers are named after their subscription, one on each topic stream the
subscription reads and one on the redrive stream. A namespace has no ``_`` and topics and
subscriptions start with a letter or digit, so names of different namespaces, topics and
internal streams never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Names"]


@dataclass(frozen=True, slots=True)
class Names:
    namespace: str

    def topic_stream(self, topic: str) -> str:
        return f"{self.namespace}_{topic}"

    def topic_of(self, stream: str) -> str | None:
        """The topic whose stream is ``stream``; None for internal and foreign streams."""
        prefix = f"{self.namespace}_"
        if not stream.startswith(prefix) or stream.startswith(f"{prefix}_"):
            return None
        return stream[len(prefix) :]

    def subject(self, topic: str, event_type: str) -> str:
        return f"{self.namespace}.{topic}.{event_type}"

    def topic_subjects(self, topic: str) -> str:
        return f"{self.namespace}.{topic}.*"

    @property
    def redrive_stream(self) -> str:
        return f"{self.namespace}__redrive"

    def redrive_subject(self, subscription: str) -> str:
        return f"{self.namespace}._redrive.{subscription}"

    @property
    def dead_stream(self) -> str:
        return f"{self.namespace}__dead"

    def dead_subject(self, subscription: str) -> str:
        return f"{self.namespace}._dead.{subscription}"

    @property
    def catalog_stream(self) -> str:
        return f"{self.namespace}__subscriptions"

    def catalog_subject(self, subscription: str) -> str:
        return f"{self.namespace}._subscription.{subscription}"

    def owns(self, stream: str) -> bool:
        """True for every stream this namespace creates."""
        return stream.startswith(f"{self.namespace}_")
