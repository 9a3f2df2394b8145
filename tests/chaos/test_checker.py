"""The chaos checker counts what it must: a write missing from the history, a write or an
event recorded twice, and a subset holding an older value than its source."""

from __future__ import annotations

from typing import Any

from ._checker import Pair, Verdict, _compare_history, _compare_subsets
from ._workload import Write


def entry(event_id: str, event_type: str, **new_data: Any) -> dict[str, Any]:
    return {"sourceEventId": event_id, "eventType": event_type, "newData": new_data}


WRITES = [
    Write("person-create", "p1", "S1", 1, 0.0, {"surname": "S1", "dateOfBirth": "1980-01-01"}),
    Write("person-update", "p1", "S2", 2, 0.0, {"surname": "S2"}),
    Write("person-update", "p1", "S3", 3, 0.0, {"surname": "S3", "dateOfBirth": "1990-01-01"}),
]
HISTORY = [
    entry("e1", "PersonCreatedEvent", surname="S1"),
    entry("e2", "PersonUpdatedEvent", surname="S2"),
    entry("e3", "PersonUpdatedEvent", surname="S3", dateOfBirth="1990-01-01"),
]


def test_a_history_with_every_write_once_passes() -> None:
    verdict = Verdict(accepted=3)
    _compare_history(verdict, "p1", HISTORY, WRITES, set())
    assert (verdict.applied, verdict.lost, verdict.duplicated_effects) == (3, 0, 0)


def test_a_write_missing_from_the_history_is_lost() -> None:
    verdict = Verdict()
    _compare_history(verdict, "p1", HISTORY[:2], WRITES, set())
    assert (verdict.applied, verdict.lost) == (2, 1)


def test_an_event_recorded_twice_is_a_duplicated_effect() -> None:
    verdict = Verdict()
    _compare_history(verdict, "p1", [*HISTORY, HISTORY[1]], WRITES, set())
    assert verdict.duplicated_effects == 2  # the event id, and the write's mark


def test_a_write_committed_unseen_may_appear_once_but_not_twice() -> None:
    unseen = entry("e4", "PersonUpdatedEvent", surname="S4")
    verdict = Verdict()
    _compare_history(verdict, "p1", [*HISTORY, unseen], WRITES, {"S4"})
    assert verdict.problems == []
    again = entry("e5", "PersonUpdatedEvent", surname="S4")
    _compare_history(verdict, "p1", [*HISTORY, unseen, again], WRITES, {"S4"})
    assert verdict.duplicated_effects == 1
    _compare_history(verdict, "p1", [*HISTORY, unseen], WRITES, set())
    assert verdict.duplicated_effects == 2  # recorded, never accepted


def pair(member_name: str, member_born: str) -> Pair:
    person: dict[str, Any] = {"id": "p1", "fullName": "P1 S3", "dateOfBirth": "1990-01-01"}
    person["tenures"] = [{"id": "t1", "paymentReference": "R1"}]
    tenure = {
        "id": "t1",
        "paymentReference": "R1",
        "householdMembers": [{"id": "p1", "fullName": member_name, "dateOfBirth": member_born}],
    }
    return Pair(person, tenure)


def test_a_subset_holding_an_older_value_is_a_stale_overwrite() -> None:
    verdict = Verdict()
    _compare_subsets(verdict, pair("P1 S3", "1990-01-01"), {"p1": WRITES})
    assert verdict.problems == []
    _compare_subsets(verdict, pair("P1 S2", "1980-01-01"), {"p1": WRITES, "t1": []})
    assert (verdict.stale_overwrites, verdict.lost) == (2, 0)


def test_a_subset_holding_a_value_never_written_is_lost() -> None:
    verdict = Verdict()
    _compare_subsets(verdict, pair("P1 Other", "1990-01-01"), {"p1": WRITES, "t1": []})
    assert (verdict.stale_overwrites, verdict.lost) == (0, 1)
