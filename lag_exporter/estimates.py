"""Pure: what one cluster's samples teach over time, added to each sample's lags: seconds behind
(seconds.py) and a status (status.py). The sampler feeds it; it does no I/O.

Per sample:
1. `observe_watermarks`: every end offset read, with the time it was read (wall clock: record
   CreateTimes from the broker are wall-clock times too).
2. `record_time_requests`: at most every `record_time_every_s`, the partitions whose committed
   offset lies beyond the watermark history (a consumer further behind than the exporter has
   been watching); the Kafka side reads the CreateTime of the record there, in one batched
   request, and hands the answers to `remember_record_times`.
3. `judge`: a group's lags with `seconds` and `status` filled in.
Partitions and groups no longer reported are forgotten by `retain`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lag_exporter.model import PartitionLag, TopicPartition
from lag_exporter.seconds import WatermarkHistory
from lag_exporter.status import PartitionStatusTracker, StatusRules

RECORD_TIME_EVERY_S = 10.0
"""Least time between two reads of record timestamps (the issue's budget: one batched Fetch per
leader every 10 s)."""


class Estimates:
    def __init__(self, rules: StatusRules | None = None, judge_status: bool = True,
                 record_time_every_s: float = RECORD_TIME_EVERY_S) -> None:
        self.history: WatermarkHistory[TopicPartition] = WatermarkHistory()
        self.status: PartitionStatusTracker[tuple[str, TopicPartition]] = \
            PartitionStatusTracker(rules)
        self.judge_status = judge_status
        """False for a one-shot snapshot: one sample proves no trend, stop or stall."""
        self.record_time_every_s = record_time_every_s
        self._record_times: dict[tuple[TopicPartition, int], tuple[int, float]] = {}
        """(partition, committed offset asked for) -> (offset, CreateTime) of the first record
        at or after it, as the broker answered."""
        self._next_record_times = float("-inf")

    def observe_watermarks(self, high_watermarks: Mapping[TopicPartition, int], at: float
                           ) -> None:
        record = self.history.record
        for tp, high_watermark in high_watermarks.items():
            record(tp, high_watermark, at)

    def record_time_requests(self, committed: Iterable[tuple[TopicPartition, int, int | None]],
                             now: float) -> dict[TopicPartition, int]:
        """(partition, committed, lag) of every group -> the offsets to read a record time at,
        one per partition (the oldest: several groups far behind on one partition take turns),
        or nothing when the last read was less than record_time_every_s ago."""
        if now < self._next_record_times:
            return {}
        wanted: dict[TopicPartition, int] = {}
        needs = self.history.needs_record_time
        for tp, offset, lag in committed:
            if (lag and (tp, offset) not in self._record_times and needs(tp, offset)
                    and offset < wanted.get(tp, offset + 1)):
                wanted[tp] = offset
        if wanted:
            self._next_record_times = now + self.record_time_every_s
        return wanted

    def remember_record_times(self, answers: Mapping[TopicPartition, tuple[int, int, float]]
                              ) -> None:
        """answers: partition -> (offset asked for, offset found, CreateTime in seconds)."""
        for tp, (requested, found, create_time) in answers.items():
            self._record_times[(tp, requested)] = (found, create_time)
            self.history.remember_record_time(tp, requested, found, create_time)

    def judge(self, group: str, lags: Iterable[PartitionLag],
              assigned: frozenset[TopicPartition], wall_now: float, now: float
              ) -> tuple[PartitionLag, ...]:
        """`lags` with seconds (at wall_now) and, unless judge_status is off, status (at now,
        any one clock) filled in."""
        seconds_behind = self.history.seconds_behind
        record_times = self._record_times
        tracker = self.status
        judged = []
        for p in lags:
            tp = TopicPartition(p.topic, p.partition)
            committed = p.committed_offset
            record_time = (record_times.get((tp, committed)) if committed is not None
                           else None)
            seconds = seconds_behind(tp, committed, p.high_watermark, wall_now, record_time)
            status = None
            if self.judge_status:
                key = (group, tp)
                tracker.update(key, now, committed, p.high_watermark, p.lag, tp in assigned)
                status = tracker.evaluate(key, now)
            judged.append(p._replace(seconds=seconds, status=status))
        return tuple(judged)

    def retain(self, groups: set[str], failed_groups: set[str],
               partitions: set[TopicPartition],
               committed: set[tuple[TopicPartition, int]]) -> None:
        """Forget what is no longer reported (short-lived groups, deleted topics). A group that
        failed this time keeps its statuses: it may be back next tick."""
        self.history.retain(partitions.__contains__)
        self.status.retain(lambda key: key[0] in failed_groups
                           or (key[0] in groups and key[1] in partitions))
        self._record_times = {key: value for key, value in self._record_times.items()
                              if key in committed}
