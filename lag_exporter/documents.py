"""Pure: a Sample becomes the `consumer_lag` documents the old shell pipeline produced.

One document per cluster x group x topic per sample:
    {"@timestamp", "cluster", "group", "topic", "p0": lag, ..., "lag_total", "lag_max"}
`p<N>` is partition N. A partition with no committed offset has no lag and no field.

Per-partition seconds are given to 0.1 s and per-partition statuses only for the partitions
that are not OK: at 10,000 partitions both maps, in full, made the documents 3.5x larger than
the lags alone, and every byte is paid for again in the bulk body and the spool.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.status import OK, group_status

_KEY_COUNT = 1024
_KEYS = [f"p{number}" for number in range(_KEY_COUNT)]
"""The field names of the first partitions, built once: three per partition per sample."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    """Deterministic: the same sample always gets the same id, so a retried write is a no-op."""
    source: dict[str, Any]


def format_timestamp(moment: datetime) -> str:
    """UTC, ISO-8601 with milliseconds and a Z, as the original pipeline wrote it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def document_id(cluster: str, group: str, topic: str, timestamp: str) -> str:
    key = "\x1f".join((cluster, group, topic, timestamp))
    return hashlib.sha256(key.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class _TopicParts:
    """A topic document but its timestamp, id and seconds: what a group passed on unchanged
    (the same partitions, GroupLag.seconds_age later) keeps from one sample to the next."""

    head: dict[str, Any]
    """@timestamp (None: a place kept first), cluster, group, topic, p<N>, and the totals
    (lag_total and lag_max, or partitions_unknown)."""
    seconds: dict[str, float]
    """p<N> -> seconds as of the sample, of every partition whose seconds are known (a dict
    of strings and floats, which the garbage collector does not track: a tuple per partition,
    ~22,000 per sample kept for a tick, made its young collections 6x as many)."""
    with_seconds_max: bool
    """Whether lag_seconds_max is given: every partition with a lag has its seconds."""
    tail: dict[str, Any]
    """status and partition_status."""

    @property
    def has_lags(self) -> bool:
        """Something to say: a lag, or partitions whose end offset is unknown."""
        return "lag_total" in self.head or "partitions_unknown" in self.head


def topic_document(
    timestamp: str,
    cluster: str,
    group: str,
    topic: str,
    lags: list[PartitionLag],
    with_nulls: bool = False,
    seconds_age: float = 0.0,
) -> Document:
    """The document of one group x topic: `p<N>` lags, `lag_total` and `lag_max` (or
    `partitions_unknown` instead when some end offsets could not be read), `lag_seconds`
    {"p<N>": s} (to 0.1 s), `lag_seconds_max`, `status` (OK / WARN / ERR) and, when the
    status is not OK, `partition_status` {"p<N>": WARN / REWIND / STALL / STOP} of the
    partitions that are not OK (a partition left out of it is OK).

    with_nulls: show partitions without a known lag as null (JSON output) instead of
    leaving the field out (Elasticsearch, where a null would read as "no data" anyway).
    seconds_age: GroupLag.seconds_age (added to every seconds behind but 0)."""
    return _document(timestamp, _topic_parts(cluster, group, topic, lags, with_nulls),
                     seconds_age)


def _topic_parts(cluster: str, group: str, topic: str, lags: list[PartitionLag],
                 with_nulls: bool) -> _TopicParts:
    head: dict[str, Any] = {"@timestamp": None, "cluster": cluster, "group": group,
                            "topic": topic}
    seconds: dict[str, float] = {}
    not_ok: dict[str, str] = {}
    total = biggest = unknown = 0
    any_lag, every_lag_has_seconds, any_status = False, True, False
    # One pass for everything (~22,000 partitions per sample at scale): totals included.
    for _, number, committed, high_watermark, lag, partition_seconds, status in lags:
        key = _KEYS[number] if number < _KEY_COUNT else f"p{number}"
        if lag is not None:
            head[key] = lag
            any_lag = True
            total += lag
            if lag > biggest:
                biggest = lag
            if partition_seconds is None:
                every_lag_has_seconds = False
        elif with_nulls:
            head[key] = None
        if committed is not None and high_watermark is None:
            unknown += 1
        if partition_seconds is not None:
            seconds[key] = partition_seconds
        if status is not None:
            any_status = True
            if status != OK:
                not_ok[key] = status
    if unknown:
        head["partitions_unknown"] = unknown
    elif any_lag:
        head["lag_total"] = total
        head["lag_max"] = biggest
    tail: dict[str, Any] = {}
    if any_status:
        tail["status"] = group_status(not_ok.values())
        if not_ok:
            tail["partition_status"] = not_ok
    # Only when every partition with a lag has its seconds: a maximum over part of them would
    # understate.
    return _TopicParts(head, seconds, not unknown and every_lag_has_seconds, tail)


def _document(timestamp: str, parts: _TopicParts, seconds_age: float) -> Document:
    source = parts.head.copy()  # a copy is cheaper than inserting its keys one by one
    source["@timestamp"] = timestamp
    if parts.seconds:
        # Aged but 0 (caught up: nothing unread), to 0.1 s (half up; seconds are never
        # negative): finer than a sample proves, and a third of the characters of 3 decimals.
        # round(x, 1) costs 4x more.
        seconds = source["lag_seconds"] = {
            key: int((value + seconds_age) * 10.0 + 0.5) / 10.0 if value else 0.0
            for key, value in parts.seconds.items()}
        if parts.with_seconds_max:
            source["lag_seconds_max"] = max(seconds.values())
    source.update(parts.tail)  # its partition_status map shared by the ticks that reuse it:
    # a document is never changed once built (the sinks and the spool only read it)
    head = parts.head
    return Document(document_id(head["cluster"], head["group"], head["topic"], timestamp),
                    source)


def _group_parts(group_lag: GroupLag, with_nulls: bool) -> list[_TopicParts]:
    return [_topic_parts(group_lag.cluster, group_lag.group, topic, list(lags), with_nulls)
            for topic, lags in groupby(group_lag.partitions, key=lambda p: p.topic)]


def group_documents(timestamp: str, group_lag: GroupLag, with_nulls: bool = False
                    ) -> list[Document]:
    return [_document(timestamp, parts, group_lag.seconds_age)
            for parts in _group_parts(group_lag, with_nulls)]


def sample_documents(sample: Sample, with_nulls: bool = False) -> list[Document]:
    """Documents of every group sampled without error; a failed group has none (never zeros).

    Without with_nulls, a topic with nothing to say (no commit yet) has no document; a topic
    whose end offsets could not be read has one, with `partitions_unknown`, so that the gap is
    visible instead of silent.
    """
    return WideDocuments(with_nulls)(sample)


class WideDocuments:
    """sample_documents, sample after sample: a group passed on unchanged (the same tuple of
    partitions, GroupLag.seconds_age later: most groups at scale) keeps its documents' lags,
    totals and statuses from the last sample; only their timestamp, ids and seconds are made
    again."""

    def __init__(self, with_nulls: bool = False) -> None:
        self.with_nulls = with_nulls
        self._groups: dict[tuple[str, str], tuple[tuple[PartitionLag, ...],
                                                  list[_TopicParts]]] = {}
        """(cluster, group) -> (its partitions in the last sample, their topics' parts)."""

    def __call__(self, sample: Sample) -> list[Document]:
        previous, self._groups = self._groups, {}
        documents: list[Document] = []
        timestamps: dict[datetime, str] = {}
        for group_lag in sample.groups:
            if group_lag.error is not None:
                continue
            key = (group_lag.cluster, group_lag.group)
            last = previous.get(key)
            if last is not None and last[0] is group_lag.partitions:
                topics = last[1]
            else:
                topics = [parts for parts in _group_parts(group_lag, self.with_nulls)
                          if self.with_nulls or parts.has_lags]
            self._groups[key] = (group_lag.partitions, topics)
            taken_at = group_lag.taken_at or sample.taken_at
            timestamp = timestamps.get(taken_at)
            if timestamp is None:
                timestamp = timestamps[taken_at] = format_timestamp(taken_at)
            documents += [_document(timestamp, parts, group_lag.seconds_age)
                          for parts in topics]
        return documents
