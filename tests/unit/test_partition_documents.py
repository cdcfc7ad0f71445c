"""The per-partition document shape (partition_documents.py), pure."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lag_exporter.documents import sample_documents
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.partition_documents import partition_documents

MOMENT = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def sample(*groups: GroupLag, at: datetime = MOMENT) -> Sample:
    return Sample(taken_at=at, groups=groups)


def test_one_document_per_partition_with_metricbeat_field_names() -> None:
    group = GroupLag("src", "oasis-group", (PartitionLag("a", 0, 5, 10, 5, 1.23456, "WARN"),
                                            PartitionLag("a", 7, 7, 7, 0)))
    assert [d.source for d in partition_documents(sample(group))] == [
        {"@timestamp": "2026-01-01T00:00:00.123Z", "cluster": "src",
         "kafka": {"consumergroup": {"id": "oasis-group", "offset": 5, "consumer_lag": 5,
                                     "consumer_lag_seconds": 1.235, "status": "WARN"},
                   "topic": {"name": "a"}, "partition": {"id": 0, "offset": {"newest": 10}}}},
        {"@timestamp": "2026-01-01T00:00:00.123Z", "cluster": "src",
         "kafka": {"consumergroup": {"id": "oasis-group", "offset": 7, "consumer_lag": 0},
                   "topic": {"name": "a"}, "partition": {"id": 7, "offset": {"newest": 7}}}},
    ]


def test_unknown_end_offset_is_a_visible_marker_never_a_zero() -> None:
    group = GroupLag("c", "g", (PartitionLag("t", 3, 4, None, None),))
    (document,) = partition_documents(sample(group))
    consumer_group = document.source["kafka"]["consumergroup"]
    assert consumer_group == {"id": "g", "offset": 4, "consumer_lag_unknown": True}
    assert "offset" not in document.source["kafka"]["partition"]


def test_partition_without_commit_and_failed_group_have_no_document() -> None:
    ok = GroupLag("c", "good", (PartitionLag("t", 0, None, 10, None),
                                PartitionLag("t", 1, 2, 10, 8)))
    failed = GroupLag("c", "bad", (), error="timed out")
    documents = partition_documents(sample(ok, failed))
    assert [(d.source["kafka"]["consumergroup"]["id"], d.source["kafka"]["partition"]["id"])
            for d in documents] == [("good", 1)]


def test_a_late_groups_documents_carry_its_own_time() -> None:
    late = GroupLag("c", "g", (PartitionLag("t", 0, 1, 2, 1),), taken_at=MOMENT)
    (document,) = partition_documents(sample(late, at=MOMENT + timedelta(seconds=5)))
    assert document.source["@timestamp"] == "2026-01-01T00:00:00.123Z"


def test_ids_are_deterministic_distinct_per_partition_and_time_and_not_the_wide_ids() -> None:
    group = GroupLag("c", "g", (PartitionLag("t", 0, 1, 2, 1), PartitionLag("t", 1, 1, 2, 1),
                                PartitionLag("u", 0, 1, 2, 1)))
    first = partition_documents(sample(group))
    assert [d.doc_id for d in first] == [d.doc_id for d in partition_documents(sample(group))]
    later = partition_documents(sample(group, at=MOMENT + timedelta(seconds=1)))
    other = partition_documents(sample(GroupLag("d", "g", group.partitions)))
    other_group = partition_documents(sample(GroupLag("c", "h", group.partitions)))
    ids = {d.doc_id for d in first + later + other + other_group}
    assert len(ids) == 12
    assert not ids & {d.doc_id for d in sample_documents(sample(group))}


def test_a_thousand_partitions_keep_the_same_few_fields() -> None:
    group = GroupLag("c", "g", tuple(PartitionLag("t", n, 0, n, n) for n in range(1200)))
    documents = partition_documents(sample(group))
    assert len(documents) == 1200
    assert {json.dumps(sorted(d.source["kafka"]["consumergroup"])) for d in documents} == {
        json.dumps(["consumer_lag", "id", "offset"])}
    assert [d.source["kafka"]["consumergroup"]["consumer_lag"] for d in documents] == list(
        range(1200))
