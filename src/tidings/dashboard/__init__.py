"""The dashboard: one web page over a running deployment. Subscriptions with their depth,
rate and dead letters, updating live; throughput and backlog over the last minutes; the
dead-letter browser with redrive; the trace of a correlation id; pause and resume."""

from tidings.dashboard.app import CONTENT_SECURITY_POLICY, create_app
from tidings.dashboard.auth import OPERATOR_GROUP, Operator, operator
from tidings.dashboard.history import History, Sample
from tidings.dashboard.views import Operations

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "OPERATOR_GROUP",
    "History",
    "Operations",
    "Operator",
    "Sample",
    "create_app",
    "operator",
]
