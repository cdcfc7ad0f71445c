"""check-config's lines about what a cluster's selection matches (the Kafka part: integration)."""

import re

from lag_exporter.config import ClusterConfig, KafkaSettings
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.plan import LISTED, group_line, matched_groups_line, selection_lines
from lag_exporter.selection import GroupSelection, TopicSelection


def cluster(groups: GroupSelection, topics: TopicSelection | None = None) -> ClusterConfig:
    return ClusterConfig("c", KafkaSettings("c", {"bootstrap.servers": "k:9092"}), groups,
                         topics or TopicSelection())


def test_patterns_come_with_their_full_match_semantics() -> None:
    with_patterns = selection_lines(cluster(GroupSelection(patterns=(re.compile("mirror"),))))
    assert "  (patterns match whole names, as Java's Pattern.matches)" in with_patterns
    assert not any("Pattern.matches" in line
                   for line in selection_lines(cluster(GroupSelection(names=("g",)))))


def test_the_groups_the_patterns_matched_are_listed_then_counted() -> None:
    config = cluster(GroupSelection(names=("exact",), patterns=(re.compile("m-.*"),)))
    assert matched_groups_line(config, ["exact", "m-1", "m-2"]) == [
        "  group patterns match 2 group(s): m-1, m-2"]
    many = [f"m-{n:03}" for n in range(LISTED + 5)]
    (line,) = matched_groups_line(config, many)
    assert line.endswith("m-019 and 5 more") and "m-020" not in line
    assert matched_groups_line(config, ["exact"]) == [
        "  group patterns match no group right now"]
    assert matched_groups_line(cluster(GroupSelection(names=("g",))), ["g"]) == []


def test_a_group_line_names_the_topics_reported_and_counts_those_left_out() -> None:
    config = cluster(GroupSelection(names=("g",)),
                     TopicSelection(patterns=(re.compile("oasis\\..*"),)))
    offsets = GroupOffsets("g", {TopicPartition("oasis.a", 0): 1, TopicPartition("oasis.a", 1): 1,
                                 TopicPartition("oasis.b", 0): 1,
                                 TopicPartition("qa-oasis.a", 0): 1})
    assert group_line(config, "g", offsets) == (
        "  group g: 2 topic(s), 3 partition(s) with commits: oasis.a, oasis.b "
        "(1 other committed topic(s) not selected)")
    assert group_line(config, "g", GroupOffsets("g", {})) == (
        "  group g: no commits (does it exist?)")
