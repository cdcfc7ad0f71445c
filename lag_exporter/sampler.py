"""One sample per tick: ask Kafka once per kind of request, compute lags, return a Sample.

Which partitions a group reports: every partition it has committed on, every partition assigned
to one of its active members, and every partition of the topics named explicitly. Who is assigned
what changes rarely, so group descriptions and topic metadata are refreshed on a slower schedule
than the offsets, which are read on every tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from lag_exporter.errors import SourceError
from lag_exporter.estimates import Estimates
from lag_exporter.lag import commits_beyond_watermark, compute_lags
from lag_exporter.model import GroupLag, GroupOffsets, PartitionLag, Sample, TopicPartition
from lag_exporter.selection import TopicSelection

log = logging.getLogger(__name__)


class OffsetSource(Protocol):
    """What the sampler needs from Kafka (KafkaSource in production, fakes in unit tests)."""

    cluster: str

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]: ...

    def group_members(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]: ...

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]: ...

    def high_watermarks(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | SourceError]: ...

    def list_groups(self) -> list[str] | SourceError: ...

    def record_times(
        self, requests: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        """partition -> offset: (offset asked, offset of the first record at or after it,
        its CreateTime in seconds), in one batched read (one assignment of them all). A source
        that reads in the background answers with the reads of earlier calls, once finished
        (IsolatedKafkaSource): so it is called on every sample, with no requests too."""
        ...

    def close(self) -> None: ...


class WrappedSource:
    """An OffsetSource that changes part of another's answers (the MirrorMaker 2 and the
    `__consumer_offsets` followers): whatever a subclass does not override goes to `inner`."""

    def __init__(self, inner: OffsetSource) -> None:
        self.inner = inner
        self.cluster = inner.cluster

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        return self.inner.committed_offsets(groups)

    def group_members(self, groups: Sequence[str]
                      ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        return self.inner.group_members(groups)

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return self.inner.topic_partitions(topics)

    def high_watermarks(self, partitions: Sequence[TopicPartition]
                        ) -> dict[TopicPartition, int | SourceError]:
        return self.inner.high_watermarks(partitions)

    def list_groups(self) -> list[str] | SourceError:
        return self.inner.list_groups()

    def record_times(self, requests: Mapping[TopicPartition, int]
                     ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        return self.inner.record_times(requests)

    def membership_changed(self, groups: Sequence[str]) -> list[str]:
        """Groups whose members changed since this source last described them, as far as it
        can tell without asking Kafka (the `__consumer_offsets` follower can: FollowedSource);
        [] when it cannot."""
        inner: object = self.inner
        if isinstance(inner, WrappedSource):
            return inner.membership_changed(groups)
        return []

    def close(self) -> None:
        self.inner.close()


@dataclass
class _Membership:
    """The slowly changing part of a sample, refreshed per group every `metadata_refresh_s`."""

    states: dict[str, str] = field(default_factory=dict)
    assigned: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)
    group_due: dict[str, float] = field(default_factory=dict)
    """When each group is described next; absent: at the next sample."""
    topic_partitions: dict[str, list[int]] = field(default_factory=dict)
    topics_due: float = float("-inf")


@dataclass(frozen=True)
class _ComputedLags:
    """A group's lags and what they were computed from, but the end offsets (Sampler.sample
    tells which of those moved)."""

    partitions: set[TopicPartition]
    committed_offsets: dict[TopicPartition, int]
    lags: tuple[PartitionLag, ...]


TOPIC_RETRY_S = 5.0
"""How soon an explicit topic that could not be described is asked for again."""
UNREADABLE_LISTED = 8
"""Partition numbers listed in one 'no end offset' warning before it says '...'."""


def group_not_found(error: SourceError) -> bool:
    return "GROUP_ID_NOT_FOUND" in str(error)


def unreadable_end_offsets(
    watermarks: dict[TopicPartition, int | SourceError]
) -> list[str]:
    """One warning per topic and error for the end offsets that could not be read (not one
    per partition: a cluster whose ListOffsets fails would log 10,000 lines in one tick)."""
    failed: dict[tuple[str, str], list[int]] = {}
    for tp, answer in watermarks.items():
        if isinstance(answer, SourceError):
            failed.setdefault((tp.topic, str(answer)), []).append(tp.partition)
    warnings = []
    for (topic, error), numbers in sorted(failed.items()):
        numbers.sort()
        listed = ", ".join(map(str, numbers[:UNREADABLE_LISTED]))
        more = ", ..." if len(numbers) > UNREADABLE_LISTED else ""
        warnings.append(f"no end offset for {len(numbers)} partition(s) of {topic} "
                        f"({listed}{more}): {error}; their lag is unknown")
    return warnings


class Sampler:
    def __init__(
        self,
        source: OffsetSource,
        groups: Sequence[str],
        topics: TopicSelection | Sequence[str] = (),
        metadata_refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        estimates: Estimates | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.estimates = estimates or Estimates()
        self._wall_clock = wall_clock
        self._next_retain = float("-inf")
        self._groups = list(dict.fromkeys(groups))
        self.topic_selection = (topics if isinstance(topics, TopicSelection)
                                else TopicSelection(names=tuple(topics)))
        self.metadata_refresh_s = metadata_refresh_s
        self._clock = clock
        self._membership = _Membership()
        self._warned_beyond_watermark: set[tuple[str, TopicPartition]] = set()
        self._last_watermarks: dict[TopicPartition, int] = {}
        self._computed: dict[str, _ComputedLags] = {}
        """Per group sampled without error in the last sample, its lags and what they were
        computed from (a group not in it has its lags computed)."""
        self._topic_errors: dict[str, str] = {}
        # set_groups / set_topics come from other threads (config reload) while a sample may be
        # running: they are parked here and applied at the start of the next sample.
        self._changes_lock = threading.Lock()
        self._pending_groups: list[str] | None = None
        self._pending_topics: TopicSelection | None = None
        self.owns: Callable[[Sequence[str]], list[str]] | None = None
        """--ha-group: which of the groups this instance reports now (ha.py); None: all."""

    @property
    def groups(self) -> list[str]:
        """The groups sampled from the next sample on."""
        with self._changes_lock:
            return list(self._pending_groups if self._pending_groups is not None
                        else self._groups)

    def sample(self, taken_at: datetime | None = None) -> Sample:
        started = self._clock()
        taken_at = taken_at or datetime.now(UTC)
        self._apply_changes()
        computed_before, self._computed = self._computed, {}
        groups = self._groups if self.owns is None else self.owns(self._groups)
        committed = self.source.committed_offsets(groups)
        if all(isinstance(answer, SourceError) for answer in committed.values()):
            # The cluster is unreachable or refuses us: asking it more would only add timeouts.
            return self._failed_sample(taken_at, groups, committed, started)
        membership = self._current_membership(groups)
        warnings: list[str] = []

        wanted = {group: self._partitions_of(group, committed[group], membership)
                  for group in groups if not isinstance(committed[group], SourceError)}
        all_partitions = list(set().union(*wanted.values()))
        asked_at = self._wall_clock()
        watermarks = self.source.high_watermarks(all_partitions)
        read_at = (asked_at + self._wall_clock()) / 2  # when the brokers answered, about
        high_watermarks = {tp: hw for tp, hw in watermarks.items() if isinstance(hw, int)}
        if len(high_watermarks) < len(watermarks):  # (the scan costs ~2 ms at 10,000)
            warnings += unreadable_end_offsets(watermarks)
        self.estimates.observe_watermarks(high_watermarks, read_at)
        # End offsets that moved, appeared, or are no longer known (~2 ms at 10,000; the
        # symmetric difference of the two items() views costs 8).
        last_watermarks, self._last_watermarks = self._last_watermarks, high_watermarks
        moved = {tp for tp, hw in high_watermarks.items() if last_watermarks.get(tp) != hw}
        moved.update(last_watermarks.keys() - high_watermarks.keys())

        group_lags = [
            self._group_lag(group, committed[group], wanted.get(group, set()), high_watermarks,
                            (moved, computed_before.get(group)), membership, warnings)
            for group in groups
        ]
        self._read_record_times(group_lags)
        now = self._clock()
        judged = tuple(
            group_lag if group_lag.error else self._judged(group_lag, membership, read_at, now)
            for group_lag in group_lags)
        if now >= self._next_retain:
            self._next_retain = now + self.metadata_refresh_s
            self._forget_unreported(judged)
        return Sample(taken_at=taken_at, groups=judged,
                      duration_s=self._clock() - started, warnings=tuple(warnings))

    def _judged(self, group_lag: GroupLag, membership: _Membership, read_at: float, now: float
                ) -> GroupLag:
        partitions, seconds_age = self.estimates.judge_as_of(
            group_lag.group, group_lag.partitions,
            membership.assigned.get(group_lag.group, frozenset()), read_at, now)
        return replace(group_lag, partitions=partitions, seconds_age=seconds_age)

    def _read_record_times(self, group_lags: Iterable[GroupLag]) -> None:
        """Record timestamps for the consumers further behind than the history reaches."""
        requests = self.estimates.record_time_requests(
            ((TopicPartition(p.topic, p.partition), p.committed_offset, p.lag)
             for g in group_lags for p in g.partitions if p.committed_offset is not None),
            self._clock())
        # Called on every sample, with no requests too: a source that reads in the background
        # (the watch's Kafka client process) hands over a finished read's answers then.
        answers = self.source.record_times(requests)
        self.estimates.remember_record_times(
            {tp: answer for tp, answer in answers.items() if not isinstance(answer, SourceError)})

    def _forget_unreported(self, group_lags: tuple[GroupLag, ...]) -> None:
        partitions = {TopicPartition(p.topic, p.partition)
                      for g in group_lags for p in g.partitions}
        committed = {(TopicPartition(p.topic, p.partition), p.committed_offset)
                     for g in group_lags for p in g.partitions if p.committed_offset is not None}
        self.estimates.retain({g.group for g in group_lags if not g.error},
                              {g.group for g in group_lags if g.error}, partitions, committed)

    def close(self) -> None:
        self.source.close()

    def _failed_sample(
        self, taken_at: datetime, groups: list[str],
        committed: dict[str, GroupOffsets | SourceError], started: float
    ) -> Sample:
        failed = tuple(GroupLag(self.source.cluster, group, (), error=str(committed[group]))
                       for group in groups)
        return Sample(taken_at=taken_at, groups=failed, duration_s=self._clock() - started)

    def _group_lag(
        self,
        group: str,
        offsets: GroupOffsets | SourceError,
        partitions: set[TopicPartition],
        high_watermarks: dict[TopicPartition, int],
        since_last: tuple[set[TopicPartition], _ComputedLags | None],
        membership: _Membership,
        warnings: list[str],
    ) -> GroupLag:
        cluster = self.source.cluster
        state = membership.states.get(group, "UNKNOWN")
        if isinstance(offsets, SourceError):
            return GroupLag(cluster, group, (), error=str(offsets), state=state)
        if not offsets.committed_offsets and not partitions and state in ("DEAD", "NOT_FOUND"):
            return GroupLag(cluster, group, (), error=f"consumer group '{group}' does not exist",
                            state=state)
        moved, last = since_last  # end offsets moved since the last sample; its lags
        if (last is not None and last.partitions == partitions
                and last.committed_offsets == offsets.committed_offsets
                and moved.isdisjoint(partitions)):
            # Nothing it is computed from changed (an idle group, or one between two commits on
            # quiet topics): the same lags, the same tuple, which the estimates pass on as well.
            self._computed[group] = last
            return GroupLag(cluster, group, last.lags, state=state)
        lags = compute_lags(partitions, offsets.committed_offsets, high_watermarks)
        self._computed[group] = _ComputedLags(partitions, dict(offsets.committed_offsets), lags)
        for partition in commits_beyond_watermark(lags):
            key = (group, TopicPartition(partition.topic, partition.partition))
            if key not in self._warned_beyond_watermark:
                self._warned_beyond_watermark.add(key)
                warnings.append(
                    f"group {group}: committed offset {partition.committed_offset} of "
                    f"{partition.topic}/{partition.partition} is beyond the high watermark "
                    f"{partition.high_watermark} (log truncated?); lag reported as 0"
                )
        return GroupLag(cluster, group, lags, state=state)

    def _partitions_of(
        self, group: str, offsets: GroupOffsets | SourceError, membership: _Membership
    ) -> set[TopicPartition]:
        assert not isinstance(offsets, SourceError)
        partitions = set(offsets.committed_offsets) | membership.assigned.get(group, frozenset())
        allowed = {topic: self.topic_selection.allows(topic)  # per topic, not per partition
                   for topic in {tp.topic for tp in partitions}}
        partitions = {tp for tp in partitions if allowed[tp.topic]}
        for topic, numbers in membership.topic_partitions.items():
            partitions.update(TopicPartition(topic, number) for number in numbers)
        return partitions

    def set_groups(self, groups: Sequence[str]) -> None:
        """New group list (discovery, config reload), used from the next sample on; new groups
        are described then. Safe to call from any thread."""
        with self._changes_lock:
            self._pending_groups = list(dict.fromkeys(groups))

    def set_topics(self, topics: TopicSelection) -> None:
        """New topic selection (config reload): explicit topics are described next sample."""
        with self._changes_lock:
            self._pending_topics = topics

    def _apply_changes(self) -> None:
        """In the sampling thread: take the parked group and topic changes, forget the rest."""
        with self._changes_lock:
            groups, self._pending_groups = self._pending_groups, None
            topics, self._pending_topics = self._pending_topics, None
        if topics is not None:
            self.topic_selection = topics
            self._membership.topics_due = float("-inf")
        if groups is None:
            return
        self._groups = groups
        kept = set(groups)
        membership = self._membership
        for known in (membership.states, membership.assigned, membership.group_due):
            for group in set(known) - kept:
                del known[group]
        self._warned_beyond_watermark = {key for key in self._warned_beyond_watermark
                                         if key[0] in kept}

    def _current_membership(self, groups: list[str]) -> _Membership:
        now = self._clock()
        membership = self._membership
        due = [g for g in groups if membership.group_due.get(g, now) <= now]
        if isinstance(self.source, WrappedSource):  # a follower of __consumer_offsets can
            due_now = set(due)                     # tell which groups' members changed
            due += [g for g in self.source.membership_changed(groups) if g not in due_now]
        if due:
            self._describe_groups(due, now)
        if membership.topics_due <= now:
            self._describe_topics(now)
        return membership

    def _describe_groups(self, groups: list[str], now: float) -> None:
        """Each group is described every metadata_refresh_s. A group described for the first
        time gets its next turn spread over the coming period, so that after start-up (or a
        discovery adding many groups) each tick describes a slice of the groups instead of one
        tick describing them all (at 500 groups that tick took ~0.4 s longer)."""
        membership = self._membership
        answers = self.source.group_members(groups)
        for index, group in enumerate(groups):
            answer = answers.get(group, SourceError("no description in Kafka's answer"))
            first_time = group not in membership.group_due
            if isinstance(answer, SourceError) and not group_not_found(answer):
                if not first_time:  # keep what we knew and ask again next tick, not in 30 s
                    membership.group_due[group] = now
                continue
            if isinstance(answer, SourceError):
                membership.states[group] = "NOT_FOUND"
                membership.assigned.pop(group, None)
            else:
                membership.states[group], membership.assigned[group] = answer
            share = (index + 1) / len(groups) if first_time else 1.0
            membership.group_due[group] = now + self.metadata_refresh_s * share

    def _describe_topics(self, now: float) -> None:
        """Partition numbers of the topics named explicitly (few), all on the slow schedule.

        A topic that cannot be described (misspelt, deleted, cluster trouble) is asked for again
        within a few seconds, and logged when its error starts or changes, not every time."""
        membership = self._membership
        membership.topics_due = now + self.metadata_refresh_s
        explicit_topics = list(self.topic_selection.names)
        for topic in set(membership.topic_partitions) - set(explicit_topics):
            del membership.topic_partitions[topic]  # no longer named
        for topic in set(self._topic_errors) - set(explicit_topics):
            del self._topic_errors[topic]
        for topic, numbers in self.source.topic_partitions(explicit_topics).items():
            if isinstance(numbers, SourceError):
                # keep the numbers known; ask again soon
                membership.topics_due = min(membership.topics_due,
                                            now + min(TOPIC_RETRY_S, self.metadata_refresh_s))
                if self._topic_errors.get(topic) != str(numbers):
                    log.warning("topic %s: %s", topic, numbers)
                self._topic_errors[topic] = str(numbers)
            else:
                if self._topic_errors.pop(topic, None) is not None:
                    log.info("topic %s: described again (%d partitions)", topic, len(numbers))
                membership.topic_partitions[topic] = numbers
