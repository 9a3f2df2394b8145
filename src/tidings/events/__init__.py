"""The event contract: model, catalog, codecs and schema export. Imports nothing of ours
but :mod:`tidings.errors`."""

from tidings.events.model import Event, EventData, User, new_event_id, utc_now

__all__ = ["Event", "EventData", "User", "new_event_id", "utc_now"]
