import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from lag_exporter.documents import format_timestamp, sample_documents
from lag_exporter.model import GroupLag, PartitionLag, Sample

MOMENT = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def lag(topic: str, partition: int, committed: int | None, end: int) -> PartitionLag:
    value = None if committed is None else max(0, end - committed)
    return PartitionLag(topic, partition, committed, end, value)


def sample(*groups: GroupLag) -> Sample:
    return Sample(taken_at=MOMENT, groups=groups)


def test_timestamp_is_utc_with_milliseconds_and_z() -> None:
    assert format_timestamp(MOMENT) == "2026-01-01T00:00:00.123Z"
    tokyo = MOMENT.astimezone(timezone(timedelta(hours=9)))
    assert format_timestamp(tokyo) == "2026-01-01T00:00:00.123Z"


def test_one_document_per_group_and_topic_with_partition_fields() -> None:
    group = GroupLag("src", "oasis-group", (lag("a", 0, 5, 10), lag("a", 1, 7, 7),
                                            lag("b", 17, 0, 3)))
    docs = sample_documents(sample(group))
    assert [d.source for d in docs] == [
        {"@timestamp": "2026-01-01T00:00:00.123Z", "cluster": "src", "group": "oasis-group",
         "topic": "a", "p0": 5, "p1": 0, "lag_total": 5, "lag_max": 5},
        {"@timestamp": "2026-01-01T00:00:00.123Z", "cluster": "src", "group": "oasis-group",
         "topic": "b", "p17": 3, "lag_total": 3, "lag_max": 3},
    ]


def test_partition_field_is_the_partition_number_not_the_row_index() -> None:
    group = GroupLag("c", "g", (lag("t", 3, 1, 2), lag("t", 11, 1, 5)))
    source = sample_documents(sample(group))[0].source
    assert source["p3"] == 1 and source["p11"] == 4 and "p0" not in source


def test_partition_without_commit_is_absent_from_the_document() -> None:
    group = GroupLag("c", "g", (lag("t", 0, None, 10), lag("t", 1, 4, 10)))
    source = sample_documents(sample(group))[0].source
    assert "p0" not in source
    assert source["p1"] == 6
    assert source["lag_total"] == 6


def test_json_output_shows_missing_lag_as_null() -> None:
    group = GroupLag("c", "g", (lag("t", 0, None, 10),))
    source = sample_documents(sample(group), with_nulls=True)[0].source
    assert source["p0"] is None
    assert "lag_total" not in source
    assert json.loads(json.dumps(source))["p0"] is None


def test_failed_group_produces_no_document_rather_than_zeros() -> None:
    ok = GroupLag("c", "good", (lag("t", 0, 1, 2),))
    failed = GroupLag("c", "bad", (), error="timed out")
    assert [d.source["group"] for d in sample_documents(sample(ok, failed))] == ["good"]


def test_ids_are_deterministic_and_distinct_per_group_topic_and_time() -> None:
    group = GroupLag("c", "g", (lag("t", 0, 1, 2), lag("u", 0, 1, 2)))
    first = sample_documents(sample(group))
    again = sample_documents(sample(group))
    later = sample_documents(Sample(MOMENT + timedelta(seconds=1), (group,)))
    other_cluster = sample_documents(sample(GroupLag("d", "g", group.partitions)))
    assert [d.doc_id for d in first] == [d.doc_id for d in again]
    ids = {d.doc_id for d in first + later + other_cluster}
    assert len(ids) == 6


def test_mapping_json_maps_partition_fields_to_long_and_names_to_keyword() -> None:
    root = Path(__file__).resolve().parents[2]
    mapping = json.loads((root / "mapping.json").read_text())["mappings"]
    templates = {name: spec for entry in mapping["dynamic_templates"]
                 for name, spec in entry.items()}
    order = [name for entry in mapping["dynamic_templates"] for name in entry]
    # lag_seconds.p3 is also named p3: its float template must come first (first match wins)
    assert order.index("partition_lag_seconds") < order.index("partition_lag")
    assert order.index("partition_status") < order.index("partition_lag")
    template = templates["partition_lag"]
    assert template["match_pattern"] == "regex" and template["match"] == r"^p\d+$"
    assert template["mapping"] == {"type": "long"}
    properties = mapping["properties"]
    assert {properties[k]["type"] for k in ("topic", "group", "cluster")} == {"keyword"}
    assert properties["@timestamp"]["type"] == "date"
    assert properties["lag_total"]["type"] == properties["lag_max"]["type"] == "long"


def test_topic_with_no_known_lag_has_no_document_but_shows_in_json() -> None:
    group = GroupLag("c", "g", (lag("t", 0, None, 10), lag("u", 0, 1, 3)))
    assert [d.source["topic"] for d in sample_documents(sample(group))] == ["u"]
    assert [d.source["topic"] for d in sample_documents(sample(group), with_nulls=True)] == [
        "t", "u"]


def test_ids_never_change_between_versions() -> None:
    # A batch spooled by one version and sent by the next must get the same ids, or it is
    # stored twice: the id of this document is pinned.
    group = GroupLag("src", "oasis-group", (lag("a", 0, 5, 10),))
    (document,) = sample_documents(sample(group))
    assert document.doc_id == "fb3f0b0aea6bd18884ede7ac7a2ff651be36427a"
    # the parts are separated: moving a character from one part to the next changes the id
    shifted = sample_documents(sample(GroupLag("src", "oasis-grou", (lag("pa", 0, 5, 10),))))
    assert shifted[0].doc_id != document.doc_id


def test_a_late_groups_documents_carry_the_time_it_was_taken() -> None:
    taken = MOMENT - timedelta(seconds=2)
    late = GroupLag("slow", "g", (lag("t", 0, 1, 2),), taken_at=taken)
    (document,) = sample_documents(sample(late))
    assert document.source["@timestamp"] == "2025-12-31T23:59:58.123Z"
    assert document.doc_id != sample_documents(sample(replace(late, taken_at=None)))[0].doc_id
