import re

from lag_exporter.selection import GroupSelection, TopicSelection


def test_exact_groups_come_first_and_are_never_excluded() -> None:
    selection = GroupSelection(names=("b-test",), patterns=(re.compile("b.*"),),
                               exclude=(re.compile(".*test"),))
    assert selection.select(["b2", "b1", "b-test", "b3-test", "a"]) == ["b-test", "b1", "b2"]


def test_patterns_match_whole_names_as_java_pattern_matches() -> None:
    """`mirror` must not also watch `qa-mirror-tmp` (re.search did)."""
    groups = GroupSelection(patterns=(re.compile("mirror"), re.compile("oasis-.*")),
                            exclude=(re.compile("test"),))
    assert groups.select(["mirror", "qa-mirror-tmp", "mirror-2", "oasis-1", "test",
                          "oasis-test"]) == ["mirror", "oasis-1", "oasis-test"]
    topics = TopicSelection(patterns=(re.compile("oasis\\..*"),), exclude=(re.compile("tmp"),))
    assert topics.allows("oasis.events") and topics.allows("oasis.tmp")
    assert not topics.allows("qa.oasis.events") and not topics.allows("tmp")


def test_no_patterns_means_no_discovery() -> None:
    assert not GroupSelection(names=("g",)).needs_discovery
    assert GroupSelection(patterns=(re.compile("."),)).needs_discovery


def test_topics_default_to_all_but_excluded() -> None:
    selection = TopicSelection(exclude=(re.compile("__.*"),))
    assert selection.allows("orders") and not selection.allows("__consumer_offsets")


def test_topic_names_are_exact_not_substrings() -> None:
    selection = TopicSelection(names=("test",))
    assert selection.allows("test") and not selection.allows("test2")
