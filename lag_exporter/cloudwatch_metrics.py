"""Pure: `consumer_lag` documents become CloudWatch metric data, in PutMetricData-sized batches.

Names and dimensions are Amazon MSK's, so that dashboards and alarms written for MSK's own
consumer-lag metrics work on these with another namespace:

    OffsetLag            per partition          Cluster Name, Consumer Group, Topic, Partition
    MaxOffsetLag         per group x topic      Cluster Name, Consumer Group, Topic
    SumOffsetLag         per group x topic      Cluster Name, Consumer Group, Topic
    EstimatedMaxTimeLag  per group x topic (s)  Cluster Name, Consumer Group, Topic

plus the configured extra dimensions. A document carries them all: `p<N>` (OffsetLag),
`lag_max`, `lag_total` and `lag_seconds_max` (present only when complete, see documents.py), so
the data are built from the documents the outbox already holds, with the sample's time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from lag_exporter.documents import Document

OFFSET_LAG = "OffsetLag"
MAX_OFFSET_LAG = "MaxOffsetLag"
SUM_OFFSET_LAG = "SumOffsetLag"
ESTIMATED_MAX_TIME_LAG = "EstimatedMaxTimeLag"
CLUSTER = "Cluster Name"
GROUP = "Consumer Group"
TOPIC = "Topic"
PARTITION = "Partition"

GROUP_TOPIC_METRICS = (("lag_max", MAX_OFFSET_LAG, "Count"),
                       ("lag_total", SUM_OFFSET_LAG, "Count"),
                       ("lag_seconds_max", ESTIMATED_MAX_TIME_LAG, "Seconds"))
"""Document field, metric name, unit."""
KEPT_WITHOUT_PARTITIONS = ("@timestamp", "cluster", "group", "topic", "lag_max", "lag_total",
                           "lag_seconds_max")
"""What a document keeps when its sample sends no per-partition metric."""

MAX_DATA_PER_CALL = 1000
"""PutMetricData takes at most 1,000 metric data per request (AWS API reference, 2026)."""
MAX_PAYLOAD_BYTES = 1_000_000
"""...and at most 1 MB per HTTP POST; counted as 10^6 bytes, the smaller reading."""
REQUEST_OVERHEAD_BYTES = 2_000
"""Namespace, action and version around the data: room kept in each request."""
MAX_DIMENSION_VALUE = 1024

Datum = dict[str, Any]
"""A MetricDatum as boto3's put_metric_data takes it."""


def parse_timestamp(text: str) -> datetime:
    """A document's `@timestamp` ('2026-01-01T00:00:00.000Z') as an aware datetime."""
    return datetime.fromisoformat(text)


def without_partitions(document: Document) -> Document:
    """The document of a sample that sends no per-partition metric (only what the
    group x topic metrics need), so that the spool holds no more than will be sent."""
    source = {key: document.source[key] for key in KEPT_WITHOUT_PARTITIONS
              if key in document.source}
    return Document(document.doc_id, source)


def partitions_due(taken_at_s: float, last_sent_s: float | None, interval_s: float | None
                   ) -> bool:
    """Whether a sample taken at `taken_at_s` (wall-clock seconds) sends per-partition
    metrics: interval None: always; 0: never; else the first sample of each interval-long
    slot of the clock (so that the rate holds whatever the sampling interval, without drift)."""
    if interval_s is None:
        return True
    if interval_s <= 0:
        return False
    return (last_sent_s is None
            or math.floor(taken_at_s / interval_s) != math.floor(last_sent_s / interval_s))


def _invalid_dimension(value: str) -> str | None:
    if not value:
        return "is empty"
    if not value.isascii():
        return "is not ASCII (CloudWatch takes ASCII dimension values only)"
    if len(value) > MAX_DIMENSION_VALUE:
        return f"is longer than {MAX_DIMENSION_VALUE} characters"
    return None


def _partition_number(key: str) -> int | None:
    if len(key) > 1 and key[0] == "p" and key[1:].isdigit():
        return int(key[1:])
    return None


def metric_data(documents: Iterable[Document], extra_dimensions: Sequence[tuple[str, str]] = ()
                ) -> tuple[list[Datum], list[str]]:
    """The metric data of documents, and one line per document that cannot become any (a
    group or topic name CloudWatch refuses as a dimension value): those are left out."""
    data: list[Datum] = []
    refused: list[str] = []
    extra = [{"Name": name, "Value": value} for name, value in extra_dimensions]
    for document in documents:
        source = document.source
        cluster, group, topic = source["cluster"], source["group"], source["topic"]
        problem = next(((name, value, why) for name, value in
                        ((CLUSTER, cluster), (GROUP, group), (TOPIC, topic))
                        if (why := _invalid_dimension(value)) is not None), None)
        if problem is not None:
            refused.append(f"{problem[0]} {problem[1][:80]!r} {problem[2]}: no metric for "
                           f"group {group[:80]!r} topic {topic[:80]!r}")
            continue
        timestamp = parse_timestamp(source["@timestamp"])
        dimensions = [{"Name": CLUSTER, "Value": cluster}, {"Name": GROUP, "Value": group},
                      {"Name": TOPIC, "Value": topic}, *extra]
        for field, name, unit in GROUP_TOPIC_METRICS:
            value = source.get(field)
            if value is not None:
                data.append({"MetricName": name, "Dimensions": dimensions, "Timestamp": timestamp,
                             "Value": float(value), "Unit": unit})
        for key, value in source.items():
            number = _partition_number(key)
            if number is not None and isinstance(value, int):
                data.append({"MetricName": OFFSET_LAG,
                             "Dimensions": [*dimensions[:3], {"Name": PARTITION,
                                                              "Value": str(number)}, *extra],
                             "Timestamp": timestamp, "Value": float(value), "Unit": "Count"})
    return data, refused


def encoded_size(datum: Datum, index: int = MAX_DATA_PER_CALL) -> int:
    """Bytes of a datum in the most verbose protocol boto3 may use (the query protocol's form
    fields, `MetricData.member.N.Dimensions.member.M.Name=...&`, percent-encoded): an upper
    bound for the JSON botocore 1.44 sends and for CBOR."""
    prefix = f"MetricData.member.{index}."
    fields = [("MetricName", datum["MetricName"]), ("Timestamp", "2026-01-01T00:00:00.000000Z"),
              ("Value", repr(datum["Value"])), ("Unit", datum.get("Unit", ""))]
    for n, dimension in enumerate(datum["Dimensions"], start=1):
        fields += [(f"Dimensions.member.{n}.Name", dimension["Name"]),
                   (f"Dimensions.member.{n}.Value", dimension["Value"])]
    return sum(len(prefix) + len(key) + 2 + len(quote(value, safe="")) for key, value in fields)


def batches(data: Sequence[Datum], max_count: int = MAX_DATA_PER_CALL,
            max_bytes: int = MAX_PAYLOAD_BYTES - REQUEST_OVERHEAD_BYTES) -> Iterator[list[Datum]]:
    """Consecutive runs of data, each within PutMetricData's limits: at most max_count data
    and max_bytes of encoded data (a single datum always fits: names are bounded)."""
    batch: list[Datum] = []
    size = 0
    for datum in data:
        datum_size = encoded_size(datum)
        if batch and (len(batch) >= max_count or size + datum_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(datum)
        size += datum_size
    if batch:
        yield batch


def batch_key(batch: Sequence[Datum]) -> str:
    """Identifies a batch by its content: a batch already accepted is not sent twice when the
    rest of its sample is retried (CloudWatch does not deduplicate data points)."""
    digest = hashlib.sha256()
    for datum in batch:
        digest.update(repr((datum["MetricName"], datum["Timestamp"].isoformat(), datum["Value"],
                            [(d["Name"], d["Value"]) for d in datum["Dimensions"]])).encode())
    return digest.hexdigest()
