"""Pure lag arithmetic: offsets in, lags out. Matches the LAG column of kafka-consumer-groups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lag_exporter.model import PartitionLag, TopicPartition


def partition_lag(committed_offset: int | None, high_watermark: int | None) -> int | None:
    """high watermark - committed offset; None when either is unknown, never negative.

    A commit beyond the watermark (possible after an unclean leader election truncated the log)
    would give a negative number, which no consumer can be "behind" by: it is reported as 0.
    """
    if committed_offset is None or high_watermark is None:
        return None
    return max(0, high_watermark - committed_offset)


def compute_lags(
    partitions: Iterable[TopicPartition],
    committed_offsets: Mapping[TopicPartition, int],
    high_watermarks: Mapping[TopicPartition, int],
) -> tuple[PartitionLag, ...]:
    """One PartitionLag per partition, sorted by topic then partition number."""
    lags = []
    for tp in sorted(set(partitions)):  # a TopicPartition sorts by (topic, partition)
        committed = committed_offsets.get(tp)
        high_watermark = high_watermarks.get(tp)
        lags.append(PartitionLag(tp.topic, tp.partition, committed, high_watermark,
                                 partition_lag(committed, high_watermark)))
    return tuple(lags)


def commits_beyond_watermark(lags: Iterable[PartitionLag]) -> list[PartitionLag]:
    """Partitions whose commit is past the high watermark (their lag was clamped to 0)."""
    return [
        p
        for p in lags
        if p.committed_offset is not None
        and p.high_watermark is not None
        and p.committed_offset > p.high_watermark
    ]


def partitions_unknown(lags: Iterable[PartitionLag]) -> int:
    """Partitions with a commit whose end offset could not be read this time: their lag is
    unknown, so a total or maximum over the others would understate the truth."""
    return sum(1 for p in lags if p.committed_offset is not None and p.high_watermark is None)


def lag_total(lags: Iterable[PartitionLag]) -> int | None:
    known = [p.lag for p in lags if p.lag is not None]
    return sum(known) if known else None


def lag_max(lags: Iterable[PartitionLag]) -> int | None:
    known = [p.lag for p in lags if p.lag is not None]
    return max(known) if known else None
