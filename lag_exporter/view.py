"""Pure: what people look at. A Sample becomes rows of cluster x group x topic, worst first, and a
bounded history of each row's total lag; both become one JSON payload (`/api/lag`), which is
what `lag-exporter top --from` and the web page read.

No I/O here: `top.py` draws rows in a terminal, `http_endpoint.py` serves the payload.
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from lag_exporter.lag import lag_max, lag_total, partitions_unknown
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.status import group_status

PAYLOAD_VERSION = 1

RowKey = tuple[str, str, str]
"""(cluster, group, topic); topic is "" on the row of a group that could not be sampled or has
no commit yet."""

_STATUS_RANK = {"ERR": 2, "WARN": 1, "OK": 0}


@dataclass(frozen=True)
class PartitionRow:
    partition: int
    committed_offset: int | None
    high_watermark: int | None
    lag: int | None
    seconds: float | None
    status: str | None


@dataclass(frozen=True)
class TopicRow:
    """One line of the view: a group's lag on one topic (or the group's error)."""

    cluster: str
    group: str
    topic: str
    lag_total: int | None
    """None when nothing is known, or when some partitions are unknown (never a partial sum)."""
    lag_max: int | None
    seconds_max: float | None
    """None unless every partition with a lag has its seconds."""
    status: str | None
    """OK / WARN / ERR over the partitions; None in a one-shot sample."""
    partitions_unknown: int
    partitions: tuple[PartitionRow, ...]
    error: str | None = None

    @property
    def key(self) -> RowKey:
        return (self.cluster, self.group, self.topic)


def worst_first(row: TopicRow) -> tuple[int, int, float, int, RowKey]:
    """Sort key: errors, then status, then seconds behind, then lag; ties by name."""
    return (
        0 if row.error is not None or row.partitions_unknown else 1,
        -_STATUS_RANK.get(row.status or "OK", 0),
        -(row.seconds_max or 0.0),
        -(row.lag_total if row.lag_total is not None else row.lag_max or 0),
        row.key,
    )


def _topic_row(cluster: str, group: str, topic: str, lags: list[PartitionLag]) -> TopicRow:
    unknown = partitions_unknown(lags)
    statuses = [p.status for p in lags if p.status is not None]
    seconds = [p.seconds for p in lags if p.lag is not None]
    known_seconds = [s for s in seconds if s is not None]
    complete_seconds = not unknown and known_seconds and len(known_seconds) == len(seconds)
    return TopicRow(
        cluster=cluster, group=group, topic=topic,
        lag_total=None if unknown else lag_total(lags),
        lag_max=lag_max(lags),
        seconds_max=max(known_seconds) if complete_seconds else None,
        status=group_status(statuses) if statuses else None,
        partitions_unknown=unknown,
        partitions=tuple(PartitionRow(p.partition, p.committed_offset, p.high_watermark, p.lag,
                                      p.seconds, p.status) for p in lags),
    )


def group_rows(group_lag: GroupLag) -> list[TopicRow]:
    if group_lag.error is not None:
        return [TopicRow(group_lag.cluster, group_lag.group, "", None, None, None, None, 0, (),
                         error=group_lag.error)]
    return [_topic_row(group_lag.cluster, group_lag.group, topic, list(lags))
            for topic, lags in groupby(group_lag.current_partitions(),
                                       key=lambda p: p.topic)]


def sample_rows(sample: Sample) -> list[TopicRow]:
    """Every row of the sample, worst first. Topics without any commit are left out; a group
    without any commit at all is one row without a topic and without a lag (it is waiting for
    its first commit: shown as such, rather than missing or as a lag of None)."""
    rows = []
    for group_lag in sample.groups:
        committed = [row for row in group_rows(group_lag)
                     if row.error is not None or any(p.committed_offset is not None
                                                     for p in row.partitions)]
        rows += committed or [TopicRow(group_lag.cluster, group_lag.group, "", None, None, None,
                                       None, 0, ())]
    return sorted(rows, key=worst_first)


class LagHistory:
    """Each row's total lag over the last `window_s` seconds, at most `max_points` per row.

    Bounded twice: points older than the window are dropped as new ones come, and rows not seen
    for a window are forgotten. Points are kept in two arrays per row (16 bytes a point, not the
    ~110 of a tuple of a float and an int). Thread-safe: the sampling thread records, HTTP
    threads read.
    """

    def __init__(self, window_s: float = 600.0, max_points: int = 600) -> None:
        self.window_s = window_s
        self.max_points = max_points
        self._points: dict[RowKey, tuple[array[float], array[int]]] = {}
        """Per row: times (seconds since the epoch) and lags (_UNKNOWN for None)."""
        self._lock = threading.Lock()

    def record(self, moment_s: float, rows: list[TopicRow]) -> None:
        """moment_s: the sample's time, seconds since the epoch."""
        with self._lock:
            for row in rows:
                points = self._points.get(row.key)
                if points is None:
                    points = self._points[row.key] = (array("d"), array("q"))
                times, lags = points
                times.append(moment_s)
                lags.append(_UNKNOWN if row.lag_total is None else row.lag_total)
                if len(times) > self.max_points:
                    del times[0], lags[0]
            horizon = moment_s - self.window_s
            for key in [k for k, (times, _) in self._points.items() if times[-1] < horizon]:
                del self._points[key]
            for times, lags in self._points.values():
                old = bisect_left(times, horizon)
                if old:
                    del times[:old], lags[:old]

    def series(self, key: RowKey) -> list[tuple[float, int | None]]:
        with self._lock:
            times, lags = self._points.get(key, ((), ()))
            return [(t, None if lag == _UNKNOWN else lag) for t, lag in zip(times, lags,
                                                                             strict=True)]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(times) for times, _ in self._points.values())


_UNKNOWN = -1
"""A lag is never negative (a commit past the end counts 0), so -1 stands for unknown."""


def sparkline(values: list[int | None], width: int) -> str:
    """The last `width` values as block characters, scaled to their own maximum; a gap (None)
    is a space, so a missing sample is visible rather than drawn as zero."""
    blocks = "▁▂▃▄▅▆▇█"
    recent = values[-width:]
    known = [v for v in recent if v is not None]
    top = max(known, default=0)
    line = []
    for value in recent:
        if value is None:
            line.append(" ")
        elif top == 0:
            line.append(blocks[0])
        else:
            line.append(blocks[min(len(blocks) - 1, math.floor(value / top * (len(blocks) - 1)
                                                                + 0.5))])
    return "".join(line)


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)


def row_payload(row: TopicRow, history: LagHistory | None) -> dict[str, Any]:
    return {
        "cluster": row.cluster, "group": row.group, "topic": row.topic,
        "lag_total": row.lag_total, "lag_max": row.lag_max,
        "seconds_max": _number(row.seconds_max), "status": row.status,
        "partitions_unknown": row.partitions_unknown, "error": row.error,
        "partitions": [{"partition": p.partition, "committed_offset": p.committed_offset,
                        "high_watermark": p.high_watermark, "lag": p.lag,
                        "seconds": _number(p.seconds), "status": p.status}
                       for p in row.partitions],
        "history": [] if history is None else [[round(t, 3), lag]
                                                for t, lag in history.series(row.key)],
    }


def view_payload(sample: Sample | None, history: LagHistory | None) -> dict[str, Any]:
    """The JSON document of `/api/lag`: the latest sample's rows, worst first, with history."""
    if sample is None:
        return {"version": PAYLOAD_VERSION, "taken_at": None, "rows": []}
    return {"version": PAYLOAD_VERSION, "taken_at": sample.taken_at.timestamp(),
            "rows": [row_payload(row, history) for row in sample_rows(sample)]}


def rows_from_payload(payload: dict[str, Any]) -> list[tuple[TopicRow, list[int | None]]]:
    """The rows of a `/api/lag` document (from a running watch) with their lag history.

    Raises ValueError on a document that is not one (wrong version or shape)."""
    if not isinstance(payload, dict) or payload.get("version") != PAYLOAD_VERSION:
        raise ValueError("not a lag-exporter /api/lag document (version "
                         f"{payload.get('version') if isinstance(payload, dict) else '?'})")
    try:
        return [
            (TopicRow(
                cluster=str(item["cluster"]), group=str(item["group"]), topic=str(item["topic"]),
                lag_total=item["lag_total"], lag_max=item["lag_max"],
                seconds_max=item["seconds_max"], status=item["status"],
                partitions_unknown=int(item["partitions_unknown"]), error=item["error"],
                partitions=tuple(PartitionRow(int(p["partition"]), p["committed_offset"],
                                              p["high_watermark"], p["lag"], p["seconds"],
                                              p["status"]) for p in item["partitions"])),
             [lag for _, lag in item["history"]])
            for item in payload["rows"]
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed /api/lag document: {error!r}") from None
