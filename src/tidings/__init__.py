"""tidings: event-driven architecture for domain APIs."""

__version__ = "0.1.0"
