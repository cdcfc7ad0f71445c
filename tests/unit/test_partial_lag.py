"""Issue 10, items 1, 2 and 14: a partition whose end offset cannot be read is never dropped
silently, and no total computed over part of a topic is presented as complete (pure logic)."""

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from lag_exporter.documents import sample_documents
from lag_exporter.errors import SourceError
from lag_exporter.lag import partitions_unknown
from lag_exporter.metrics import LagMetrics
from lag_exporter.model import GroupLag, GroupOffsets, PartitionLag, Sample, TopicPartition
from lag_exporter.sampler import Sampler, unreadable_end_offsets

TP = TopicPartition
MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def known(topic: str, partition: int, committed: int, end: int) -> PartitionLag:
    return PartitionLag(topic, partition, committed, end, max(0, end - committed))


def unreadable(topic: str, partition: int, committed: int) -> PartitionLag:
    return PartitionLag(topic, partition, committed, None, None)


def test_partitions_unknown_counts_commits_without_an_end_offset_only() -> None:
    lags = [known("t", 0, 1, 5), unreadable("t", 1, 3),
            PartitionLag("t", 2, None, None, None),  # no commit: nothing is missing
            PartitionLag("t", 3, None, 9, None)]
    assert partitions_unknown(lags) == 1


def test_a_partly_read_topic_has_a_marker_and_no_totals() -> None:
    group = GroupLag("c", "g", (known("t", 0, 0, 1_000_000), unreadable("t", 1, 0),
                                known("u", 0, 5, 7)))
    documents = {d.source["topic"]: d.source for d in sample_documents(Sample(MOMENT, (group,)))}
    assert documents["t"] == {"@timestamp": "2026-01-01T00:00:00.000Z", "cluster": "c",
                              "group": "g", "topic": "t", "p0": 1_000_000,
                              "partitions_unknown": 1}
    assert documents["u"]["lag_total"] == 2 and "partitions_unknown" not in documents["u"]


def test_a_topic_with_no_end_offset_at_all_still_has_a_document() -> None:
    """Before: no lag at all -> no document, so the topic vanished from the index silently."""
    group = GroupLag("c", "g", (unreadable("t", 0, 4), unreadable("t", 1, 4)))
    [document] = sample_documents(Sample(MOMENT, (group,)))
    assert document.source["partitions_unknown"] == 2
    assert "lag_total" not in document.source and "p0" not in document.source


def test_unreadable_end_offsets_are_one_warning_per_topic_and_error() -> None:
    down = SourceError("Local: Timed out (_TIMED_OUT)")
    watermarks: dict[TopicPartition, int | SourceError] = {
        TP("big", n): down for n in range(10_000)}
    watermarks[TP("small", 0)] = SourceError("Local: Unknown partition (_UNKNOWN_PARTITION)")
    watermarks[TP("fine", 0)] = 5
    assert unreadable_end_offsets(watermarks) == [
        "no end offset for 10000 partition(s) of big (0, 1, 2, 3, 4, 5, 6, 7, ...): "
        "Local: Timed out (_TIMED_OUT); their lag is unknown",
        "no end offset for 1 partition(s) of small (0): "
        "Local: Unknown partition (_UNKNOWN_PARTITION); their lag is unknown",
    ]


def scrape(metrics: LagMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples}


def test_metrics_export_no_sum_or_max_over_part_of_a_topic() -> None:
    metrics = LagMetrics()
    metrics.observe(Sample(MOMENT, (GroupLag("c", "g", (
        known("t", 0, 0, 6_000_000), unreadable("t", 1, 0), known("u", 0, 5, 7))),)))
    series = scrape(metrics)
    names = {name for name, _ in series}
    topic_sums = {dict(labels)["topic"]: value for (name, labels), value in series.items()
                  if name == "kafka_consumergroup_group_topic_sum_lag"}
    assert topic_sums == {"u": 2}
    assert "kafka_consumergroup_group_sum_lag" not in names
    assert "kafka_consumergroup_group_max_lag" not in names
    unknown = {dict(labels)["topic"]: value for (name, labels), value in series.items()
               if name == "lag_exporter_partitions_unknown"}
    assert unknown == {"t": 1, "u": 0}


class ReloadDuringSample:
    """A fake Kafka whose first answer arrives while a config reload changes the groups (the
    reload runs on the main thread while a slow cluster's sample is in flight)."""

    cluster = "c"

    def __init__(self) -> None:
        self.sampler: Sampler | None = None

    def committed_offsets(self, groups: list[str]) -> dict[str, GroupOffsets | SourceError]:
        assert self.sampler is not None
        self.sampler.set_groups(["new"])
        return {g: GroupOffsets(g, {TP("t", 0): 1}) for g in groups}

    def group_members(self, groups: list[str]) -> dict[str, object]:
        return {g: ("EMPTY", frozenset()) for g in groups}

    def topic_partitions(self, topics: list[str]) -> dict[str, object]:
        return {}

    def high_watermarks(self, partitions: list[TopicPartition]) -> dict[TopicPartition, object]:
        return {tp: 3 for tp in partitions}

    def list_groups(self) -> list[str]:
        return []

    def record_times(self, requests: dict[TopicPartition, int]) -> dict[TopicPartition, object]:
        return {}

    def close(self) -> None:
        pass


def test_a_reload_during_a_sample_applies_to_the_next_one_without_losing_this_one() -> None:
    kafka = ReloadDuringSample()
    sampler = Sampler(kafka, ["old"])  # type: ignore[arg-type]
    kafka.sampler = sampler
    first = sampler.sample()  # KeyError 'new' before the fix
    assert [g.group for g in first.groups] == ["old"]
    assert first.groups[0].partitions[0].lag == 2
    assert sampler.groups == ["new"]
    assert [g.group for g in sampler.sample().groups] == ["new"]
