"""Pure: a Sample becomes one document per cluster x group x topic x partition.

The wide `consumer_lag` shape (documents.py) has a field per partition, so a topic near 1,000
partitions hits Elasticsearch's `index.mapping.total_fields.limit`. This shape has a fixed set of
fields whatever the partition count, named as Metricbeat's kafka module names them:

    {"@timestamp", "cluster",
     "kafka": {"consumergroup": {"id", "consumer_lag", "offset",
                                 "consumer_lag_seconds", "status", "consumer_lag_unknown"},
               "topic": {"name"},
               "partition": {"id", "offset": {"newest"}}}}

The same rules as the wide shape: a failed group has no document (never zeros); a partition
without a commit has none (nothing to say); a committed partition whose end offset could not be
read has a document without `consumer_lag` and with `consumer_lag_unknown: true`, so the gap is
visible instead of silent.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lag_exporter.documents import Document, format_timestamp
from lag_exporter.model import PartitionLag, Sample


def partition_document_id(cluster: str, group: str, topic: str, partition: int,
                          timestamp: str) -> str:
    """Deterministic, and never equal to a wide document's id (five parts, not four)."""
    key = "\x1f".join((cluster, group, topic, str(partition), timestamp))
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def partition_document(timestamp: str, cluster: str, group: str, lag: PartitionLag) -> Document:
    consumer_group: dict[str, Any] = {"id": group, "offset": lag.committed_offset}
    partition: dict[str, Any] = {"id": lag.partition}
    if lag.lag is not None:
        consumer_group["consumer_lag"] = lag.lag
    else:
        consumer_group["consumer_lag_unknown"] = True
    if lag.high_watermark is not None:
        partition["offset"] = {"newest": lag.high_watermark}
    if lag.seconds is not None:
        consumer_group["consumer_lag_seconds"] = round(lag.seconds, 3)
    if lag.status is not None:
        consumer_group["status"] = lag.status
    source = {"@timestamp": timestamp, "cluster": cluster,
              "kafka": {"consumergroup": consumer_group, "topic": {"name": lag.topic},
                        "partition": partition}}
    return Document(
        partition_document_id(cluster, group, lag.topic, lag.partition, timestamp), source)


def partition_documents(sample: Sample) -> list[Document]:
    """One document per committed partition of every group sampled without error."""
    return [
        partition_document(format_timestamp(group_lag.taken_at or sample.taken_at),
                           group_lag.cluster, group_lag.group, lag)
        for group_lag in sample.groups
        if group_lag.error is None
        for lag in group_lag.current_partitions()
        if lag.committed_offset is not None
    ]
