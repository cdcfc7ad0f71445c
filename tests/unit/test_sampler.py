"""The sampler against a fake Kafka that implements the same small interface (pure logic)."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter import sampler as sampler_module
from lag_exporter.errors import SourceError
from lag_exporter.lag import compute_lags
from lag_exporter.model import GroupOffsets, PartitionLag, TopicPartition
from lag_exporter.sampler import Sampler, WrappedSource
from lag_exporter.selection import TopicSelection

TP = TopicPartition


class FakeKafka:
    cluster = "fake"

    def __init__(self) -> None:
        self.committed: dict[str, GroupOffsets | SourceError] = {}
        self.members: dict[str, tuple[str, frozenset[TopicPartition]] | SourceError] = {}
        self.topics: dict[str, list[int] | SourceError] = {}
        self.watermarks: dict[TopicPartition, int | SourceError] = {}
        self.calls: list[str] = []
        self.described: list[list[str]] = []
        self.record_time_answers: dict[TopicPartition, tuple[int, int, float]] = {}

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        self.calls.append("offsets")
        return {g: self.committed.get(g, GroupOffsets(g, {})) for g in groups}

    def group_members(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        self.calls.append("describe")
        self.described.append(list(groups))
        return {g: self.members.get(g, ("EMPTY", frozenset())) for g in groups}

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return {t: self.topics[t] for t in topics}

    def high_watermarks(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | SourceError]:
        self.calls.append(f"watermarks:{len(partitions)}")
        return {tp: self.watermarks.get(tp, 0) for tp in partitions}


    def record_times(
        self, requests: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        self.calls.append(f"record_times:{len(requests)}")
        return {tp: self.record_time_answers.get(tp, SourceError("no record"))
                for tp in requests}

    def list_groups(self) -> list[str] | SourceError:
        self.calls.append("list")
        return sorted(g for g in self.committed)

    def close(self) -> None:
        self.calls.append("close")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lag_of_committed_and_assigned_partitions() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 10})
    kafka.members["g"] = ("STABLE", frozenset({TP("t", 0), TP("t", 1)}))
    kafka.watermarks = {TP("t", 0): 15, TP("t", 1): 4}
    sample = Sampler(kafka, ["g"]).sample(datetime(2026, 1, 1, tzinfo=UTC))
    group = sample.groups[0]
    assert group.state == "STABLE"
    assert [(p.partition, p.committed_offset, p.high_watermark, p.lag)
            for p in group.partitions] == [(0, 10, 15, 5), (1, None, 4, None)]


def test_all_high_watermarks_in_one_batched_call_for_all_groups() -> None:
    kafka = FakeKafka()
    for group in ("a", "b", "c"):
        kafka.committed[group] = GroupOffsets(group, {TP("t", n): 0 for n in range(4)})
    Sampler(kafka, ["a", "b", "c"]).sample()
    assert [c for c in kafka.calls if c.startswith("watermarks")] == ["watermarks:4"]


def test_explicit_topic_adds_partitions_without_commit_and_filters_others() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 1, TP("other", 0): 1})
    kafka.topics["t"] = [0, 1, 2]
    sample = Sampler(kafka, ["g"], topics=["t"]).sample()
    assert [(p.topic, p.partition) for p in sample.groups[0].partitions] == [
        ("t", 0), ("t", 1), ("t", 2)]


def test_one_failing_group_keeps_the_others() -> None:
    kafka = FakeKafka()
    kafka.committed["good"] = GroupOffsets("good", {TP("t", 0): 1})
    kafka.committed["bad"] = SourceError("coordinator not available")
    kafka.watermarks = {TP("t", 0): 3}
    groups = {g.group: g for g in Sampler(kafka, ["good", "bad"]).sample().groups}
    assert groups["bad"].error == "coordinator not available"
    assert groups["good"].error is None and groups["good"].partitions[0].lag == 2


def test_group_without_commits_or_members_that_kafka_calls_dead_does_not_exist() -> None:
    kafka = FakeKafka()
    kafka.members["ghost"] = ("DEAD", frozenset())
    group = Sampler(kafka, ["ghost"]).sample().groups[0]
    assert group.error == "consumer group 'ghost' does not exist"


def test_memberless_group_with_commits_is_still_reported() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 1})
    kafka.members["g"] = ("EMPTY", frozenset())
    kafka.watermarks = {TP("t", 0): 9}
    group = Sampler(kafka, ["g"]).sample().groups[0]
    assert group.error is None and group.partitions[0].lag == 8


def test_commit_beyond_watermark_warns_once() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 50})
    kafka.watermarks = {TP("t", 0): 40}
    sampler = Sampler(kafka, ["g"])
    first, second = sampler.sample(), sampler.sample()
    assert first.groups[0].partitions[0].lag == 0
    assert len(first.warnings) == 1 and "beyond the high watermark" in first.warnings[0]
    assert second.warnings == ()


def test_unreadable_watermark_gives_no_lag_and_a_warning() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("gone", 0): 5})
    kafka.watermarks = {TP("gone", 0): SourceError("Broker: Unknown topic or partition")}
    sample = Sampler(kafka, ["g"]).sample()
    assert sample.groups[0].partitions[0].lag is None
    assert sample.warnings == ("no end offset for 1 partition(s) of gone (0): Broker: Unknown "
                               "topic or partition; their lag is unknown",)


def test_group_descriptions_refresh_on_the_slow_schedule_only() -> None:
    kafka, clock = FakeKafka(), Clock()
    sampler = Sampler(kafka, ["g"], metadata_refresh_s=30, clock=clock)
    for second in range(61):
        clock.now = float(second)
        sampler.sample()
    assert kafka.calls.count("describe") == 3
    assert kafka.calls.count("offsets") == 61


class ChangeTellingSource(WrappedSource):
    """A source that can tell, without asking Kafka, which groups' members changed (as the
    `__consumer_offsets` follower does from membership records)."""

    def __init__(self, inner: FakeKafka) -> None:
        super().__init__(inner)
        self.changed: list[str] = []

    def membership_changed(self, groups: Sequence[str]) -> list[str]:
        changed, self.changed = [g for g in self.changed if g in groups], []
        return changed


def test_a_group_whose_members_changed_is_described_at_the_next_sample() -> None:
    kafka, clock = FakeKafka(), Clock()
    source = ChangeTellingSource(kafka)
    sampler = Sampler(source, ["g", "h"], metadata_refresh_s=30, clock=clock)
    sampler.sample()
    assert kafka.described == [["g", "h"]]
    kafka.members["g"] = ("STABLE", frozenset({TP("t", 0)}))
    clock.now = 3.0
    source.changed = ["g"]
    sampler.sample()
    assert kafka.described[1:] == [["g"]]  # now, not at its turn in 30 s
    for second in range(4, 20):  # and not again before its next turn
        clock.now = float(second)
        sampler.sample()
    assert kafka.described[2:] == []


def test_group_descriptions_are_spread_over_the_refresh_period() -> None:
    """500 groups described in one tick every 30 s made that tick ~0.4 s slower (scale c)."""
    kafka, clock = FakeKafka(), Clock()
    groups = [f"g{n}" for n in range(300)]
    sampler = Sampler(kafka, groups, metadata_refresh_s=30, clock=clock)
    for second in range(61):
        clock.now = float(second)
        sampler.sample()
    batches = kafka.described
    assert len(batches[0]) == 300  # the first sample needs every group's assignment
    assert max(len(batch) for batch in batches[1:]) <= 11  # 300 groups / 30 ticks, +1
    described = [group for batch in batches for group in batch]
    assert all(described.count(group) == 3 for group in groups)  # t=0, then every 30 s


def test_new_groups_are_described_next_tick_and_gone_ones_forgotten() -> None:
    kafka, clock = FakeKafka(), Clock()
    kafka.members["new"] = ("STABLE", frozenset({TP("t", 0)}))
    sampler = Sampler(kafka, ["old"], metadata_refresh_s=30, clock=clock)
    sampler.sample()
    clock.now = 1.0
    sampler.set_groups(["new"])
    sample = sampler.sample()
    assert kafka.described == [["old"], ["new"]]
    assert sample.groups[0].state == "STABLE"
    assert [p.partition for p in sample.groups[0].partitions] == [0]


def test_failed_description_is_retried_next_tick() -> None:
    kafka, clock = FakeKafka(), Clock()
    kafka.members["g"] = SourceError("timed out")
    sampler = Sampler(kafka, ["g"], metadata_refresh_s=30, clock=clock)
    sampler.sample()
    clock.now = 1.0
    sampler.sample()
    assert kafka.calls.count("describe") == 2


def test_a_group_missing_from_the_describe_answer_is_described_again() -> None:
    kafka, clock = FakeKafka(), Clock()
    answer_all = kafka.group_members
    kafka.group_members = lambda groups: {}  # type: ignore[method-assign]
    sampler = Sampler(kafka, ["g"], metadata_refresh_s=30, clock=clock)
    assert sampler.sample().groups[0].state == "UNKNOWN"
    kafka.group_members = answer_all  # type: ignore[method-assign]
    clock.now = 1.0
    sampler.sample()
    assert kafka.described == [["g"]]


def test_a_topic_no_longer_named_is_no_longer_reported_and_a_new_one_at_once() -> None:
    kafka, clock = FakeKafka(), Clock()
    kafka.topics = {"old": [0], "new": [0, 1]}
    sampler = Sampler(kafka, ["g"], topics=["old"], metadata_refresh_s=30, clock=clock)
    assert [p.topic for p in sampler.sample().groups[0].partitions] == ["old"]
    clock.now = 1.0
    sampler.set_topics(TopicSelection(names=("new",)))  # a config reload
    sample = sampler.sample()
    assert [(p.topic, p.partition) for p in sample.groups[0].partitions] == [("new", 0), ("new", 1)]


_OFFSETS = st.dictionaries(st.integers(0, 2), st.integers(0, 6), max_size=3)
_TICK = st.tuples(
    st.dictionaries(st.sampled_from(["a", "b"]), _OFFSETS | st.none()),  # None: the group fails
    st.dictionaries(st.integers(0, 2), st.integers(0, 9) | st.none()),  # None: unreadable
    st.booleans(),  # whether "b" is sampled at this tick (dropped from the list, then back)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TICK, min_size=1, max_size=8))
def test_lags_are_always_those_of_the_current_offsets(ticks: list[tuple[
        dict[str, dict[int, int] | None], dict[int, int | None], bool]]) -> None:
    """Whatever changes between ticks (commits, end offsets, failures, the group list), the
    lags reported are those of this tick's offsets, reused or not."""
    kafka = FakeKafka()
    sampler = Sampler(kafka, ["a", "b"])
    for commits, end_offsets, with_b in ticks:
        for name in ("a", "b"):
            offsets = commits.get(name, {})
            kafka.committed[name] = (SourceError("down") if offsets is None else GroupOffsets(
                name, {TP("t", p): o for p, o in offsets.items()}))
        kafka.watermarks = {TP("t", p): SourceError("no leader") if hw is None else hw
                            for p, hw in end_offsets.items()}
        sampler.set_groups(["a", "b"] if with_b else ["a"])
        for group_lag in sampler.sample().groups:
            offsets = commits.get(group_lag.group, {})
            if offsets is None:
                assert group_lag.error == "down"
                continue
            expected = []
            for p, committed in sorted(offsets.items()):
                hw = end_offsets.get(p, 0)
                expected.append((p, committed, hw, None if hw is None else max(0, hw - committed)))
            assert [(p.partition, p.committed_offset, p.high_watermark, p.lag)
                    for p in group_lag.partitions] == expected


def test_only_groups_whose_offsets_moved_have_their_lags_computed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[list[TopicPartition]] = []

    def counted(partitions: set[TopicPartition], *args: Mapping[TopicPartition, int]
                ) -> tuple[PartitionLag, ...]:
        computed.append(sorted(partitions))
        return compute_lags(partitions, *args)

    monkeypatch.setattr(sampler_module, "compute_lags", counted)
    kafka = FakeKafka()
    kafka.committed["on-t"] = GroupOffsets("on-t", {TP("t", 0): 1})
    kafka.committed["on-u"] = GroupOffsets("on-u", {TP("u", 0): 1})
    kafka.watermarks = {TP("t", 0): 5, TP("u", 0): 5}
    sampler = Sampler(kafka, ["on-t", "on-u"])
    sampler.sample()
    sampler.sample()  # nothing moved
    kafka.watermarks[TP("u", 0)] = 6
    sampler.sample()
    kafka.committed["on-t"] = GroupOffsets("on-t", {TP("t", 0): 2})
    last = sampler.sample()
    assert computed == [[TP("t", 0)], [TP("u", 0)], [TP("u", 0)], [TP("t", 0)]]
    assert [p.lag for g in last.groups for p in g.partitions] == [3, 5]


def test_a_group_back_after_a_tick_unsampled_sees_the_end_offsets_that_moved_meanwhile() -> None:
    kafka = FakeKafka()
    for name in ("a", "b"):
        kafka.committed[name] = GroupOffsets(name, {TP("t", 0): 1})
    kafka.watermarks = {TP("t", 0): 5}
    sampler = Sampler(kafka, ["a", "b"])
    sampler.sample()
    sampler.set_groups(["a"])
    kafka.watermarks[TP("t", 0)] = 7  # read for "a" alone
    sampler.sample()
    sampler.set_groups(["a", "b"])
    back = {g.group: g.partitions[0].lag for g in sampler.sample().groups}
    assert back == {"a": 6, "b": 6}


def test_partitions_added_without_a_commit_are_reported_at_once() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 1})
    kafka.committed["other"] = GroupOffsets("other", {TP("t", 1): 0})  # t/1's end offset read
    kafka.topics["t"] = [0, 1]
    kafka.watermarks = {TP("t", 0): 5, TP("t", 1): 3}
    sampler = Sampler(kafka, ["g", "other"])
    sampler.sample()
    sampler.set_topics(TopicSelection(names=("t",)))  # no offset moved
    group = sampler.sample().groups[0]
    assert [(p.partition, p.lag) for p in group.partitions] == [(0, 4), (1, None)]


def test_an_end_offset_no_longer_readable_is_unknown_at_once() -> None:
    kafka = FakeKafka()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 1})
    kafka.watermarks = {TP("t", 0): 5}
    sampler = Sampler(kafka, ["g"])
    sampler.sample()
    kafka.watermarks = {TP("t", 0): SourceError("Broker: Not leader for partition")}
    partition = sampler.sample().groups[0].partitions[0]
    assert (partition.high_watermark, partition.lag) == (None, None)
