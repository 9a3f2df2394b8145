"""The transactional outbox: events written in the domain's own transaction, and the relay
that publishes them."""

from tidings.outbox.relay import Relay
from tidings.outbox.table import outbox_table
from tidings.outbox.writer import Outbox

__all__ = ["Outbox", "Relay", "outbox_table"]
