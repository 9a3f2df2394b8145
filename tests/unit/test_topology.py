from __future__ import annotations

from pathlib import Path

import pytest

from tidings.errors import ConfigurationError
from tidings.topology import Subscription, Topology

TOML = """
[topics.person]
[topics.tenure]

[subscriptions.tenure-listener]
topics = ["person"]
event_types = ["PersonCreatedEvent", "PersonUpdatedEvent"]
max_attempts = 3
in_flight = 8
rate = 20.0
backoff = { initial = 0.5, maximum = 30.0 }

[subscriptions.activity]
topics = ["person", "tenure"]
"""


def test_toml_topology_loads_with_policies(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(TOML)
    topology = Topology.from_toml(path)
    assert [t.name for t in topology.topics] == ["person", "tenure"]
    sub = topology.subscription("tenure-listener")
    assert sub.max_attempts == 3 and sub.in_flight == 8 and sub.rate == 20.0
    assert sub.backoff.initial == 0.5 and sub.backoff.maximum == 30.0
    assert topology.subscription("activity").event_types == ()


def test_filter_selects_subscribers_by_topic_and_type() -> None:
    topology = Topology.build(
        ["person", "tenure"],
        [
            Subscription(name="a", topics=("person",), event_types=("PersonUpdatedEvent",)),
            Subscription(name="b", topics=("person", "tenure")),
        ],
    )
    assert [s.name for s in topology.subscribers("person", "PersonUpdatedEvent")] == ["a", "b"]
    assert [s.name for s in topology.subscribers("person", "PersonCreatedEvent")] == ["b"]
    assert [s.name for s in topology.subscribers("tenure", "PersonUpdatedEvent")] == ["b"]


def test_subscription_to_an_unknown_topic_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="unknown topic 'nope'"):
        Topology.build(["person"], [Subscription(name="a", topics=("nope",))])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="declared twice"):
        Topology.build(["person", "person"])


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ('[topics."Bad Name"]', "name"),
        ('[topics.p]\n[subscriptions.s]\ntopics = ["p"]\nmax_attempts = 0', "max_attempts"),
        ('[topics.p]\n[subscriptions.s]\ntopics = ["p"]\nin_flight = "many"', "in_flight"),
        ('[topics.p]\n[subscriptions.s]\ntopics = ["p"]\nsurprise = 1', "surprise"),
        ('[topics.p]\n[subscriptions.s]\ntopics = ["p"]\nevent_types = ["a.b"]', "event_types"),
    ],
)
def test_invalid_toml_names_the_failing_field(tmp_path: Path, snippet: str, field: str) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(snippet)
    with pytest.raises(ConfigurationError, match=field):
        Topology.from_toml(path)


def test_unreadable_or_malformed_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Topology.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[topics\n")
    with pytest.raises(ConfigurationError):
        Topology.from_toml(bad)


def test_merge_adds_and_replaces_by_name() -> None:
    base = Topology.build(["person"], [Subscription(name="a", topics=("person",))])
    more = Topology.build(
        ["person", "tenure"], [Subscription(name="a", topics=("tenure",), max_attempts=2)]
    )
    merged = base.merge(more)
    assert [t.name for t in merged.topics] == ["person", "tenure"]
    assert merged.subscription("a").topics == ("tenure",)
    assert merged.subscription("a").max_attempts == 2
