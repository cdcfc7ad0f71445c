import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter import documents as documents_module
from lag_exporter.documents import (
    WideDocuments,
    format_timestamp,
    group_documents,
    sample_documents,
    topic_document,
)
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.status import OK, PARTITION_STATUSES, group_status

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


def judged(partition: int, lag: int, seconds: float | None, status: str | None
           ) -> PartitionLag:
    return PartitionLag("t", partition, 10, 10 + lag, lag, seconds, status)


def test_partition_status_lists_only_the_partitions_that_are_not_ok() -> None:
    group = GroupLag("c", "g", (judged(0, 4, 1.0, "OK"), judged(1, 9, 2.0, "STALL"),
                                judged(2, 3, 3.0, "WARN"), judged(3, 0, 0.0, "OK")))
    (document,) = sample_documents(sample(group))
    assert document.source["status"] == "ERR"
    assert document.source["partition_status"] == {"p1": "STALL", "p2": "WARN"}


def test_an_ok_topic_has_its_status_and_no_partition_status() -> None:
    group = GroupLag("c", "g", (judged(0, 4, 1.0, "OK"), judged(1, 0, 0.0, "OK")))
    (document,) = sample_documents(sample(group))
    assert document.source["status"] == "OK"
    assert "partition_status" not in document.source
    (snapshot,) = sample_documents(sample(GroupLag("c", "g", (judged(0, 4, 1.0, None),))))
    assert "status" not in snapshot.source and "partition_status" not in snapshot.source


def test_a_topic_document_alone_has_its_seconds_as_given() -> None:
    document = topic_document("2026-01-01T00:00:00.000Z", "c", "g", "t",
                              [judged(0, 5, 12.5, "OK"), judged(1, 0, 0.0, "OK")])
    assert document.source["lag_seconds"] == {"p0": 12.5, "p1": 0.0}


def test_seconds_are_given_to_a_tenth_rounded_half_up() -> None:
    group = GroupLag("c", "g", (judged(0, 4, 12.345, "OK"), judged(1, 4, 0.04, "OK"),
                                judged(2, 4, 0.05, "OK"), judged(3, 4, 7.25, "OK"),
                                judged(4, 0, 0.0, "OK"), judged(5, 4, 86399.96, "OK")))
    (document,) = sample_documents(sample(group))
    assert document.source["lag_seconds"] == {"p0": 12.3, "p1": 0.0, "p2": 0.1, "p3": 7.3,
                                              "p4": 0.0, "p5": 86400.0}
    assert document.source["lag_seconds_max"] == 86400.0
    assert json.dumps(document.source["lag_seconds"]) == (
        '{"p0": 12.3, "p1": 0.0, "p2": 0.1, "p3": 7.3, "p4": 0.0, "p5": 86400.0}')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.one_of(st.none(), st.floats(0.0, 1e7)),
                          st.sampled_from(PARTITION_STATUSES)),
                min_size=1, max_size=12))
def test_the_shorter_document_loses_nothing(
        partitions: list[tuple[int, float | None, str]]) -> None:
    """Every partition's status reads back (absent from partition_status = OK), the topic's
    status is that of all its partitions, every seconds value is within 0.05 s with one
    decimal, and the maximum is that of the values shown."""
    lags = tuple(judged(number, lag, seconds, status)
                 for number, (lag, seconds, status) in enumerate(partitions))
    (document,) = sample_documents(sample(GroupLag("c", "g", lags)))
    source = document.source
    shown = source.get("partition_status", {})
    assert {f"p{p.partition}": shown.get(f"p{p.partition}", OK) for p in lags} == {
        f"p{p.partition}": p.status for p in lags}
    assert OK not in shown.values()
    assert source["status"] == group_status(p.status for p in lags if p.status is not None)
    assert ("partition_status" in source) == (source["status"] != OK)
    seconds = source.get("lag_seconds", {})
    assert set(seconds) == {f"p{p.partition}" for p in lags if p.seconds is not None}
    for p in lags:
        if p.seconds is not None:
            value = seconds[f"p{p.partition}"]
            assert abs(value - p.seconds) <= 0.05 + 1e-9 * p.seconds
            assert value == float(f"{value:.1f}")
    if all(p.seconds is not None for p in lags):
        assert source["lag_seconds_max"] == max(seconds.values())
    else:
        assert "lag_seconds_max" not in source


_PARTITION = st.builds(
    PartitionLag, st.sampled_from(["a", "b"]), st.integers(0, 3),
    st.none() | st.integers(0, 9), st.none() | st.integers(0, 9), st.none() | st.integers(0, 9),
    st.none() | st.sampled_from([0.0, 1.5, 30.25]), st.none() | st.sampled_from(PARTITION_STATUSES))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.lists(_PARTITION, max_size=4).map(lambda ps: tuple(sorted(ps, key=lambda p: p.topic))),
    st.booleans(),  # the group passed on as it was, with its seconds aged
    st.sampled_from([0.0, 1.0, 2.5]),  # seconds_age
    st.booleans()), min_size=1, max_size=6), st.booleans())
def test_documents_of_groups_passed_on_are_those_built_from_scratch(
        ticks: list[tuple[tuple[PartitionLag, ...], bool, float, bool]], with_nulls: bool) -> None:
    wide = WideDocuments(with_nulls)
    partitions: tuple[PartitionLag, ...] = ()
    for second, (new_partitions, passed_on, age, failed) in enumerate(ticks):
        if not passed_on:
            partitions = new_partitions
        group = GroupLag("c", "g", partitions, error="down" if failed else None,
                         seconds_age=age)
        at = Sample(taken_at=MOMENT + timedelta(seconds=second), groups=(group,))
        built = [] if failed else group_documents(format_timestamp(at.taken_at), group,
                                                  with_nulls)
        assert wide(at) == [d for d in built if with_nulls or "lag_total" in d.source
                            or "partitions_unknown" in d.source]


def test_a_group_passed_on_has_only_its_seconds_and_timestamp_made_again() -> None:
    partitions = (judged(0, 5, 10.0, "WARN"), judged(1, 0, 0.0, OK))
    wide = WideDocuments()
    first = wide(sample(GroupLag("c", "g", partitions)))[0]
    later = Sample(taken_at=MOMENT + timedelta(seconds=2),
                   groups=(GroupLag("c", "g", partitions, seconds_age=2.0),))
    [document] = wide(later)
    assert document.source["lag_seconds"] == {"p0": 12.0, "p1": 0.0}
    assert document.source["lag_seconds_max"] == 12.0
    assert document.source["@timestamp"] == "2026-01-01T00:00:02.123Z"
    assert document.doc_id != first.doc_id
    assert {k: v for k, v in document.source.items() if k not in (
        "@timestamp", "lag_seconds", "lag_seconds_max")} == {
        k: v for k, v in first.source.items() if k not in (
            "@timestamp", "lag_seconds", "lag_seconds_max")}
    assert document.source is not first.source


def test_groups_passed_on_are_not_built_again_and_a_failed_one_stops_no_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    topic_parts = documents_module._topic_parts

    def counted(cluster: str, group: str, *rest: Any) -> Any:
        built.append(group)
        return topic_parts(cluster, group, *rest)

    monkeypatch.setattr(documents_module, "_topic_parts", counted)
    one, two = (judged(0, 5, 10.0, OK),), (judged(1, 3, 4.0, OK),)
    failed = GroupLag("c", "failed", (), error="coordinator not available")
    wide = WideDocuments()
    wide(sample(failed, GroupLag("c", "one", one), GroupLag("c", "two", two)))
    later = wide(sample(failed, GroupLag("c", "one", one, seconds_age=1.0),
                        GroupLag("c", "two", two, seconds_age=1.0)))
    assert built == ["one", "two"]
    assert [(d.source["group"], d.source["lag_seconds"]) for d in later] == [
        ("one", {"p0": 11.0}), ("two", {"p1": 5.0})]


def test_watch_documents_leave_an_unknown_lag_out() -> None:
    group = GroupLag("c", "g", (lag("t", 0, 5, 9), lag("t", 1, None, 9)))
    [document] = WideDocuments()(sample(group))
    assert "p1" not in document.source and document.source["p0"] == 4
    [document] = group_documents("2026-01-01T00:00:00.000Z", group)
    assert "p1" not in document.source
    assert "p1" not in topic_document("x", "c", "g", "t", list(group.partitions)).source
