"""Subsets: copies of another domain's fields kept in the listener's own records, written
with a per-field version guard, and re-read from the owning API when events are thin."""

from tidings.subsets.guard import MEMBERSHIP, VersionGuard, apply_changes, subset_versions_table
from tidings.subsets.source import SourceClient, SourceRecord, SourceRefused, SourceUnavailable

__all__ = [
    "MEMBERSHIP",
    "SourceClient",
    "SourceRecord",
    "SourceRefused",
    "SourceUnavailable",
    "VersionGuard",
    "apply_changes",
    "subset_versions_table",
]
