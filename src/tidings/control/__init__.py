"""Operating a deployment: the control store (subscriptions, operator controls, listener
heartbeats, the trace of every event) and the background trace recorder."""

from tidings.control.recorder import Recorder
from tidings.control.store import (
    UNSET,
    Controls,
    ControlStore,
    ListenerBeat,
    TraceRecord,
    process_name,
)

__all__ = [
    "UNSET",
    "ControlStore",
    "Controls",
    "ListenerBeat",
    "Recorder",
    "TraceRecord",
    "process_name",
]
