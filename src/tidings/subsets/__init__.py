"""Subsets: copies of another domain's fields kept in the listener's own records, written
with a per-field version guard, re-read from the owning API when events are thin, and
reconciled with it when they drifted anyway."""

from tidings.subsets.guard import MEMBERSHIP, VersionGuard, apply_changes, subset_versions_table
from tidings.subsets.reconcile import Copy, Finding, Report, Status, Subset, reconcile
from tidings.subsets.source import SourceClient, SourceRecord, SourceRefused, SourceUnavailable

__all__ = [
    "Copy",
    "Finding",
    "MEMBERSHIP",
    "Report",
    "SourceClient",
    "SourceRecord",
    "SourceRefused",
    "SourceUnavailable",
    "Status",
    "Subset",
    "VersionGuard",
    "apply_changes",
    "reconcile",
    "subset_versions_table",
]
