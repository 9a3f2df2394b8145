"""tidings: event-driven architecture for domain APIs.

The names most code needs are here; each subpackage has the rest.
"""

from tidings.brokers import Broker, Message, connect
from tidings.db import create_engine, create_tables, session_factory
from tidings.events import Event, EventCatalog, EventData, User, decode, encode
from tidings.listener import DeadLetter, Listener, ListenerRuntime, Outcome, Retry
from tidings.outbox import Outbox, Relay
from tidings.topology import Backoff, Subscription, Topic, Topology

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Broker",
    "DeadLetter",
    "Event",
    "EventCatalog",
    "EventData",
    "Listener",
    "ListenerRuntime",
    "Message",
    "Outbox",
    "Outcome",
    "Relay",
    "Retry",
    "Subscription",
    "Topic",
    "Topology",
    "User",
    "__version__",
    "connect",
    "create_engine",
    "create_tables",
    "decode",
    "encode",
    "session_factory",
]
