"""Documents -> CloudWatch metric data (cloudwatch_metrics.py): names, dimensions, values, the
sample's time, and batches within PutMetricData's limits."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import botocore.session
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter.cloudwatch_metrics import (
    MAX_DATA_PER_CALL,
    MAX_PAYLOAD_BYTES,
    REQUEST_OVERHEAD_BYTES,
    Datum,
    batch_key,
    batches,
    encoded_size,
    metric_data,
    partitions_due,
    without_partitions,
)
from lag_exporter.documents import Document, sample_documents
from lag_exporter.model import GroupLag, PartitionLag, Sample

MOMENT = datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=UTC)


def sample(*lags: PartitionLag, group: str = "billing", cluster: str = "dc1") -> Sample:
    return Sample(MOMENT, (GroupLag(cluster, group, tuple(lags)),))


def dims(datum: Datum) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in datum["Dimensions"]}


def test_msk_names_dimensions_values_and_the_sample_time() -> None:
    documents = sample_documents(sample(PartitionLag("orders", 0, 10, 14, 4, 2.5),
                                        PartitionLag("orders", 1, 7, 7, 0, 0.0),
                                        PartitionLag("orders", 2, 3, 9, 6, 8.25)))
    data, refused = metric_data(documents, (("Environment", "prod"),))
    assert refused == []
    topic = {"Cluster Name": "dc1", "Consumer Group": "billing", "Topic": "orders",
             "Environment": "prod"}
    got = {(d["MetricName"], tuple(sorted(dims(d).items()))): (d["Value"], d["Unit"])
           for d in data}
    assert got == {
        ("MaxOffsetLag", tuple(sorted(topic.items()))): (6.0, "Count"),
        ("SumOffsetLag", tuple(sorted(topic.items()))): (10.0, "Count"),
        # (8.25 s: the documents give seconds to 0.1 s)
        ("EstimatedMaxTimeLag", tuple(sorted(topic.items()))): (8.3, "Seconds"),
        **{("OffsetLag", tuple(sorted((topic | {"Partition": str(p)}).items()))): (lag, "Count")
           for p, lag in ((0, 4.0), (1, 0.0), (2, 6.0))}}
    assert len(data) == 6
    # the sample's time to the millisecond, as in the documents (never the time of sending)
    assert {d["Timestamp"] for d in data} == {datetime(2026, 3, 1, 12, 0, 5, 250000,
                                                      tzinfo=UTC)}


def test_no_seconds_metric_without_complete_seconds_and_no_totals_when_partitions_unknown() -> None:
    complete = sample_documents(sample(PartitionLag("t", 0, 1, 5, 4)))
    assert {d["MetricName"] for d in metric_data(complete)[0]} == {
        "OffsetLag", "MaxOffsetLag", "SumOffsetLag"}
    # p1's end offset is unknown: a max or sum over p0 alone would understate the lag
    partial = sample_documents(sample(PartitionLag("t", 0, 1, 5, 4),
                                      PartitionLag("t", 1, 1, None, None)))
    data, _ = metric_data(partial)
    assert [(d["MetricName"], dims(d)["Partition"], d["Value"]) for d in data] == [
        ("OffsetLag", "0", 4.0)]


def test_a_name_cloudwatch_refuses_costs_only_its_own_metrics() -> None:
    documents = [*sample_documents(sample(PartitionLag("t", 0, 1, 5, 4), group="façade")),
                 *sample_documents(sample(PartitionLag("t", 0, 1, 2, 1), group="ok"))]
    data, refused = metric_data(documents)
    assert {dims(d)["Consumer Group"] for d in data} == {"ok"}
    assert refused == ["Consumer Group 'façade' is not ASCII (CloudWatch takes ASCII dimension "
                       "values only): no metric for group 'façade' topic 't'"]


def test_without_partitions_keeps_what_the_group_topic_metrics_need() -> None:
    [document] = sample_documents(sample(PartitionLag("t", 0, 1, 5, 4, 1.5, "WARN"),
                                         PartitionLag("t", 1, 1, 3, 2, 0.5, "OK")))
    slim = without_partitions(document)
    assert slim.doc_id == document.doc_id
    assert set(slim.source) == {"@timestamp", "cluster", "group", "topic", "lag_max",
                                "lag_total", "lag_seconds_max"}
    assert {d["MetricName"] for d in metric_data([slim])[0]} == {
        "MaxOffsetLag", "SumOffsetLag", "EstimatedMaxTimeLag"}


def test_partition_metrics_every_sample_never_or_once_per_slot_of_the_clock() -> None:
    assert partitions_due(100.0, 99.0, None)
    assert not partitions_due(100.0, None, 0)
    assert partitions_due(100.0, None, 60)  # the first sample always
    assert not partitions_due(119.9, 60.5, 60)  # same minute
    assert partitions_due(120.0, 119.9, 60)  # a new minute, however close
    sent = []
    last = None
    for tick in range(0, 300):  # 1 s samples for 5 minutes, 0.3 s after the second
        at = 1_000_020.3 + tick
        if partitions_due(at, last, 60):
            sent.append(at)
            last = at
    assert len(sent) == 5 and all(60 <= b - a < 61 for a, b in itertools.pairwise(sent))


def datum(name: str = "OffsetLag", value: float = 1.0, extra: int = 0,
          text: str = "g") -> Datum:
    dimensions = [{"Name": "Consumer Group", "Value": text}, {"Name": "Topic", "Value": "t"}]
    dimensions += [{"Name": f"D{n}", "Value": "v" * 100} for n in range(extra)]
    return {"MetricName": name, "Dimensions": dimensions, "Timestamp": MOMENT, "Value": value,
            "Unit": "Count"}


ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                     max_size=1024)
data_strategy = st.lists(st.builds(datum, value=st.floats(0, 2**62), extra=st.integers(0, 26),
                                   text=ascii_text), max_size=300)


@settings(max_examples=60, deadline=None, database=None)
@given(data=data_strategy, max_count=st.sampled_from([MAX_DATA_PER_CALL, 7, 1]),
       max_bytes=st.sampled_from([MAX_PAYLOAD_BYTES - REQUEST_OVERHEAD_BYTES, 40_000, 1]))
def test_batches_keep_order_and_stay_within_both_limits(data: list[Datum], max_count: int,
                                                        max_bytes: int) -> None:
    chunks = list(batches(data, max_count, max_bytes))
    assert [d for chunk in chunks for d in chunk] == data  # nothing lost, added or reordered
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_count
        assert len(chunk) == 1 or sum(encoded_size(d) for d in chunk) <= max_bytes
    for chunk, following in itertools.pairwise(chunks):  # no call wasted
        assert (len(chunk) == max_count
                or sum(encoded_size(d) for d in chunk) + encoded_size(following[0]) > max_bytes)


MODEL = botocore.session.get_session().get_service_model("cloudwatch")


def request_size(protocol: str, data: list[Datum]) -> int:
    """Bytes of the body botocore sends (the query protocol's fields are form-encoded)."""
    body: Any = create_serializer(protocol).serialize_to_request(
        {"Namespace": "KafkaLag", "MetricData": data},
        MODEL.operation_model("PutMetricData"))["body"]
    if isinstance(body, dict):
        body = urlencode(body)
    return len(body if isinstance(body, bytes) else body.encode())


@settings(max_examples=20, deadline=None, database=None)
@given(data=st.lists(st.builds(datum, extra=st.integers(0, 26), text=ascii_text),
                     min_size=1, max_size=40))
def test_the_estimate_bounds_the_real_request_in_every_protocol_botocore_has(
    data: list[Datum],
) -> None:
    """botocore's own serializers (no network): query (form), JSON and CBOR bodies all fit in
    the sizes batches() counts, so a batch it makes is never refused for its size."""
    estimate = sum(encoded_size(d, n) for n, d in enumerate(data, start=1))
    for protocol in ("query", "json", "smithy-rpc-v2-cbor"):
        assert request_size(protocol, data) <= estimate + REQUEST_OVERHEAD_BYTES, protocol


def test_a_full_batch_of_real_sized_data_is_1000_data_under_1_mb() -> None:
    names = [datum(text="group-" + "x" * 60, extra=1) for _ in range(2500)]
    chunks = list(batches(names))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert request_size("query", chunks[0]) < MAX_PAYLOAD_BYTES


def test_batch_key_tells_batches_apart_by_content() -> None:
    assert batch_key([datum(value=1.0)]) == batch_key([datum(value=1.0)])
    assert batch_key([datum(value=1.0)]) != batch_key([datum(value=2.0)])
    assert batch_key([datum(text="a")]) != batch_key([datum(text="b")])


def test_documents_of_many_partitions_give_one_datum_each() -> None:
    lags = [PartitionLag("wide", n, 0, n, n) for n in range(1500)]
    [document] = sample_documents(sample(*lags))
    data, _ = metric_data([document])
    offsets = {int(dims(d)["Partition"]): d["Value"] for d in data
               if d["MetricName"] == "OffsetLag"}
    assert offsets == {n: float(n) for n in range(1500)}
    assert [len(c) for c in batches(data)] == [1000, 502]


def test_a_document_without_fields_of_its_own_gives_nothing() -> None:
    empty = Document("x", {"@timestamp": "2026-03-01T12:00:05.250Z", "cluster": "c",
                           "group": "g", "topic": "t"})
    assert metric_data([empty]) == ([], [])
