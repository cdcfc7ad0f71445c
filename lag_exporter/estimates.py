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

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from lag_exporter.model import PartitionLag, TopicPartition, aged_partitions
from lag_exporter.seconds import WatermarkHistory
from lag_exporter.status import PartitionStatusTracker, StatusRules

STATUS_EVERY_S = 5.0
"""Statuses are re-evaluated this often (every offset change is still seen at every tick): the
rules work on scales of 30 s and more, and evaluating 22,000 partitions every tick costs ~12 ms.
Even then only the partitions whose offsets moved, or whose status may be due to change
(`evaluate_until`), are evaluated."""
_LastTick = tuple[tuple[PartitionLag, ...], frozenset[TopicPartition], float,
                  tuple[PartitionLag, ...], float, tuple[bool, ...]]
_FOREVER = float("inf")
_NEVER = float("-inf")
_new = tuple.__new__
"""Builds a PartitionLag without the NamedTuple's Python-level __new__: twice as fast, and this
runs for every group partition of every tick."""
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
        self.status_every_s = STATUS_EVERY_S
        self._statuses: dict[tuple[str, TopicPartition], tuple[str, float]] = {}
        """Per group x partition, the last evaluated status and until when it holds unless the
        offsets move (-inf: they moved since, evaluate at the next evaluation)."""
        self._next_evaluation = float("-inf")
        self._evaluation_at = float("nan")
        """The `now` of the tick whose statuses are evaluated (the sampler passes one `now`
        to every group of a sample)."""
        self._groups: dict[str, _LastTick] = {}
        """Per group, the last judged lags: (lags as computed, assignment, wall time they were
        judged at, judged lags, the earliest time one of their statuses may change, per
        partition whether the history brackets the write time of the record at its committed
        offset)."""
        self._unchanged: dict[tuple[str, TopicPartition],
                              tuple[int | None, int, bool, float, bool]] = {}
        """Per group x partition: (committed, high watermark, assigned, write time of the
        record at the committed offset, whether the history brackets it) when last computed."""

    def observe_watermarks(self, high_watermarks: Mapping[TopicPartition, int], at: float
                           ) -> None:
        self.history.record_all(high_watermarks, at)

    def record_time_requests(self, committed: Iterable[tuple[TopicPartition, int, int | None]],
                             now: float) -> dict[TopicPartition, int]:
        """(partition, committed, lag) of every group -> the offsets to read a record time at,
        one per partition (the oldest: several groups far behind on one partition take turns),
        or nothing when the last read was less than record_time_every_s ago."""
        if now < self._next_record_times:
            return {}
        self._next_record_times = now + self.record_time_every_s  # the scan costs too
        wanted: dict[TopicPartition, int] = {}
        needs = self.history.needs_record_time
        for tp, offset, lag in committed:
            if (lag and (tp, offset) not in self._record_times and needs(tp, offset)
                    and offset < wanted.get(tp, offset + 1)):
                wanted[tp] = offset
        return wanted

    def remember_record_times(self, answers: Mapping[TopicPartition, tuple[int, int, float]]
                              ) -> None:
        """answers: partition -> (offset asked for, offset found, CreateTime in seconds)."""
        for tp, (requested, found, create_time) in answers.items():
            self._record_times[(tp, requested)] = (found, create_time)
            self.history.remember_record_time(tp, requested, found, create_time)

    def judge(self, group: str, lags: Sequence[PartitionLag],
              assigned: frozenset[TopicPartition], wall_now: float, now: float
              ) -> tuple[PartitionLag, ...]:
        """`lags` with seconds (at wall_now) and, unless judge_status is off, status (at now,
        any one clock) filled in."""
        judged, age = self.judge_as_of(group, lags, assigned, wall_now, now)
        return aged_partitions(judged, age)

    def judge_as_of(self, group: str, lags: Sequence[PartitionLag],
                    assigned: frozenset[TopicPartition], wall_now: float, now: float
                    ) -> tuple[tuple[PartitionLag, ...], float]:
        """As judge, but the seconds of the lags returned are those of `age` seconds ago (the
        second element): a group whose offsets did not move since an earlier tick gets that
        tick's judged lags, the same tuple, instead of a rebuilt one (GroupLag.seconds_age)."""
        lags = tuple(lags)  # the sampler's tuple as it is; compared with the last tick's
        if self.judge_status and now >= self._next_evaluation:  # once per tick, every group
            self._evaluation_at = now
            self._next_evaluation = now + self.status_every_s
        evaluate_now = self.judge_status and now == self._evaluation_at
        last = self._groups.get(group)
        if (last is not None and last[0] == lags and last[1] == assigned
                and last[2] <= wall_now and not (evaluate_now and now >= last[4])):
            # Nothing moved since those lags were judged (most groups at scale, between
            # commits) and no status is due: each record was written when it was, so their
            # seconds only age, by the time since.
            return last[3], wall_now - last[2]
        if last is not None and not evaluate_now and last[1] == assigned and (
                shortcut := _only_end_offsets_moved(lags, last[3], last[5],
                                                    wall_now - last[2])) is not None:
            # Their statuses learn the new lags at the next evaluation, by _judge_each.
            judged, status_until, bracketed = shortcut, _NEVER, last[5]
        else:
            judged, status_until, every_bracketed = self._judge_each(
                group, lags, assigned, wall_now, now, evaluate_now)
            if every_bracketed is None:  # some seconds may be known next tick: no shortcut
                self._groups.pop(group, None)
                return judged, 0.0
            bracketed = every_bracketed
        self._groups[group] = (lags, assigned, wall_now, judged, status_until, bracketed)
        return judged, 0.0

    def _judge_each(self, group: str, lags: Iterable[PartitionLag],
                    assigned: frozenset[TopicPartition], wall_now: float, now: float,
                    evaluate_now: bool
                    ) -> tuple[tuple[PartitionLag, ...], float, tuple[bool, ...] | None]:
        """The judged lags, the earliest time one of their statuses may change, and per
        partition whether the history brackets the write time of the record at its committed
        offset, or None instead when the seconds of a partition with a commit and an end
        offset are unknown."""
        # Runs for every group x partition (22,000 at scale c): locals, no _replace.
        seconds_behind, covers = self.history.seconds_behind, self.history.covers
        record_times = self._record_times
        update, evaluate = self.status.update, self.status.evaluate_until
        statuses = self._statuses
        judge_status = self.judge_status
        unchanged = self._unchanged
        judged = []
        group_until = _FOREVER
        complete = True
        bracketed: list[bool] = []
        for topic, partition, committed, high_watermark, lag, _, _ in lags:
            # A plain tuple equals (and hashes as) the TopicPartition NamedTuple, at less cost.
            tp = cast(TopicPartition, (topic, partition))
            key = (group, tp)
            is_assigned = tp in assigned
            last = unchanged.get(key)
            if (last is not None and last[0] == committed and last[2] == is_assigned
                    and (last[1] == high_watermark or (last[4] and high_watermark is not None
                                                       and high_watermark > last[1]))):
                # The same record at the committed offset as when last computed, and its
                # write time was bracketed by the history then: records appended since do not
                # change when it was written. Its age is the seconds.
                age = wall_now - last[3]
                seconds: float | None = 0.0 if lag == 0 or age < 0.0 else age
                committed_moved = False
                moved = last[1] != high_watermark
                if moved:  # the lag changed: judged at the next evaluation
                    unchanged[key] = (committed, high_watermark, is_assigned, last[3], True)
                bracketed.append(last[4])
            else:
                record_time = (record_times.get((tp, committed))
                               if record_times and committed is not None else None)
                seconds = seconds_behind(tp, committed, high_watermark, wall_now, record_time)
                if seconds is None or high_watermark is None:
                    unchanged.pop(key, None)  # unknown: ask again next tick
                    complete = complete and (committed is None or high_watermark is None)
                    bracketed.append(False)
                else:
                    settled = seconds > 0.0 and covers(tp, committed)
                    unchanged[key] = (committed, high_watermark, is_assigned, wall_now - seconds,
                                      settled)
                    bracketed.append(settled)
                committed_moved = moved = True
            status = None
            if judge_status:
                if committed_moved:  # every offset change is seen at once: trend, gaps, rewinds
                    update(key, now, committed, high_watermark, lag, is_assigned)
                entry = statuses.get(key)
                if entry is None or (evaluate_now and (moved or entry[1] <= now)):
                    if not committed_moved:  # the latest end offset and lag
                        update(key, now, committed, high_watermark, lag, is_assigned)
                    entry = statuses[key] = evaluate(key, now)
                elif moved and entry[1] != _NEVER:  # keep it until the next evaluation
                    entry = statuses[key] = (entry[0], _NEVER)
                status = entry[0]
                if entry[1] < group_until:
                    group_until = entry[1]
            judged.append(_new(PartitionLag, (topic, partition, committed, high_watermark,
                                              lag, seconds, status)))
        return tuple(judged), group_until, tuple(bracketed) if complete else None

    def retain(self, groups: set[str], failed_groups: set[str],
               partitions: set[TopicPartition],
               committed: set[tuple[TopicPartition, int]]) -> None:
        """Forget what is no longer reported (short-lived groups, deleted topics). A group that
        failed this time keeps its statuses: it may be back next tick."""
        self.history.retain(partitions.__contains__)
        def keep(key: tuple[str, TopicPartition]) -> bool:
            return key[0] in failed_groups or (key[0] in groups and key[1] in partitions)

        self.status.retain(keep)
        self._statuses = {key: value for key, value in self._statuses.items() if keep(key)}
        self._unchanged = {key: value for key, value in self._unchanged.items() if keep(key)}
        self._groups = {group: value for group, value in self._groups.items()
                        if group in groups or group in failed_groups}
        self._record_times = {key: value for key, value in self._record_times.items()
                              if key in committed}


def _only_end_offsets_moved(lags: Sequence[PartitionLag], last: Sequence[PartitionLag],
                            bracketed_by_history: Sequence[bool], age: float
                            ) -> tuple[PartitionLag, ...] | None:
    """`lags` judged from the last tick's judged lags when no commit moved and every end
    offset that moved grew past a record whose write time the history brackets (a group
    between two commits while records arrive: most groups, most ticks): the seconds age,
    statuses stay as they were. None when that does not hold."""
    if len(lags) != len(last) or age < 0.0:
        return None
    judged = []
    for now_lag, last_lag, bracketed in zip(lags, last, bracketed_by_history, strict=True):
        topic, partition, committed, high_watermark, lag, _, _ = now_lag
        _, _, _, last_high_watermark, _, seconds, status = last_lag
        if committed != last_lag[2] or partition != last_lag[1] or topic != last_lag[0]:
            return None
        if high_watermark == last_high_watermark:
            seconds = seconds + age if seconds else seconds  # 0: caught up, stays 0
        elif (bracketed and high_watermark is not None and last_high_watermark is not None
              and high_watermark > last_high_watermark and seconds):
            seconds = seconds + age  # the same record, written when it was
        else:
            return None
        judged.append(_new(PartitionLag, (topic, partition, committed, high_watermark, lag,
                                          seconds, status)))
    return tuple(judged)
