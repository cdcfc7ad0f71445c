"""A verdict to alert on, per partition and per group: Burrow's vocabulary, without its false
alarms. Pure: fed the exporter's own samples, every time passed in by the caller.

Per partition the tracker keeps the latest sample, the current committed offset and when it was
first seen, the last `commits_kept` (10) intervals between offset changes, and a trend: the lag
at offset changes, at most `commits_kept` points at least window_s / (2 x commits_kept) (30 s)
apart. The rules, in this order (the first that applies wins):

1. OK when the lag is <= `allowed_lag` (default 1), whatever the commits do: a caught-up
   consumer on a quiet topic is OK (Burrow says STOP), and so is one stuck at lag 1 behind the
   commit marker of a transactional topic. Also OK while the lag is unknown (no commit yet, or
   no end offset ever read).
2. REWIND when the committed offset went backwards within the last `window_s` (600 s).
3. STOP when the offset has not moved for longer than the threshold and no active member holds
   the partition. Threshold = max(`stop_after_s` (300 s), 3 x the median of the partition's
   last 10 intervals between offset changes): a MirrorMaker 1 group committing every 60 s is
   never flagged between its commits, and one committing every 5 min gets 15 min.
4. STALL when the offset has not moved for longer than the same threshold, an active member
   holds the partition and the high watermark moved since the offset last did (records arrive
   and are not committed). OffsetFetch carries no commit time, so "commits the same offset
   again" and "does not commit" look alike; the assignment tells STOP (nobody consumes) from
   STALL (a member consumes and does not progress). With an active member, a quiet topic and a
   fixed residual lag (aborted transactions, markers) nothing is proven wrong: rule 6.
5. WARN when the consumer falls further behind: the lag rose at every trend point within the
   window, over at least `min_commits_for_warn` (5) points, i.e. for 2 minutes or more. The
   lag *at offset changes* is the bottom of a saw-tooth, so a group committing every 60 s does
   not flap between its commits; the 30 s spacing makes the trend span minutes even for a
   consumer committing every second; "rose" is strict because small lags tie often and
   "never decreased" would fire on a healthy consumer by chance; one burst is one rise, not
   five.
6. OK otherwise (behind but keeping up or catching up).

A partition just being watched has little history: the offset's "unchanged for" time counts
from the first sample, so STOP and STALL need a full threshold of samples, WARN needs 5 trend
points, REWIND needs a backward move seen by the exporter; until then rule 1 or 6 answers. The
trend judges the whole window, not the latest run of rises: 10 noisy points all rising by
chance is one in 3.6 million, the latest 5 would be one in 120, i.e. hourly somewhere.

Group (and group x topic) status: `group_status`, Burrow's ERR when any partition is STOP, STALL
or REWIND, WARN when any is WARN, else OK; `worst_status` gives the partition word instead.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
_T = TypeVar("_T")

OK = "OK"
WARN = "WARN"
REWIND = "REWIND"
STALL = "STALL"
STOP = "STOP"
ERR = "ERR"
PARTITION_STATUSES = (OK, WARN, REWIND, STALL, STOP)
"""Least to most severe: STOP (nobody consumes) is worst, REWIND (re-reading) heals itself."""
GROUP_STATUSES = (OK, WARN, ERR)
_FOREVER = float("inf")
_SEVERITY = {status: rank for rank, status in enumerate(PARTITION_STATUSES)}


@dataclass(frozen=True)
class StatusRules:
    window_s: float = 600.0
    """How long a REWIND is reported, and how far back commits count for WARN."""
    allowed_lag: int = 1
    """A lag this small is OK. 1, not 0: transactional topics keep a lag of 1 forever (the
    commit marker after the last record, e.g. MirrorMaker 1 commits record.offset + 1), and a
    single unconsumed record is not worth a page; a real stop shows as soon as a second record
    arrives."""
    stop_after_s: float = 300.0
    """Least time without an offset change before STOP/STALL: 5 x the 60 s default commit
    interval of MirrorMaker and Kafka Connect."""
    interval_factor: float = 3.0
    """STOP/STALL also wait this many times the median of the partition's last
    `commits_kept` intervals between offset changes."""
    commits_kept: int = 10
    """Offset changes remembered per partition, for the interval and for the WARN trend
    (Burrow keeps 10 commits)."""
    min_commits_for_warn: int = 5
    """Trend points needed for WARN. Not 3: three noisy readings rise by chance 1 time in 6."""

    def __post_init__(self) -> None:
        if not self.window_s > 0 or not self.stop_after_s > 0 or not self.interval_factor > 0:
            raise ValueError("window_s, stop_after_s and interval_factor must be > 0")
        if self.allowed_lag < 0:
            raise ValueError("allowed_lag must be >= 0")
        if self.commits_kept < 2 or not 2 <= self.min_commits_for_warn <= self.commits_kept:
            raise ValueError("commits_kept and min_commits_for_warn must be >= 2, "
                             "min_commits_for_warn <= commits_kept")

    @property
    def trend_spacing_s(self) -> float:
        """Least time between two WARN trend points: `commits_kept` of them span at least half
        the window, whatever the commit rate (10 one-second commits would span 10 s)."""
        return self.window_s / (2 * self.commits_kept)


class _Partition:
    __slots__ = (
        "assigned", "changed_at", "committed", "committed_since", "gaps", "high_watermark",
        "high_watermark_at_commit", "lag", "rewound_at", "trend",
    )

    def __init__(self) -> None:
        self.committed: int | None = None
        self.committed_since = 0.0
        """When the current committed offset was first seen."""
        self.changed_at: float | None = None
        """When the offset last changed, None while it has not changed since the first sample
        (then its commit time is unknown)."""
        self.gaps: list[float] = []
        """The last intervals between offset changes, oldest first (a short list, not a deque:
        an empty deque alone is 600 bytes, times 10,000 partitions)."""
        self.trend: list[tuple[float, int]] = []
        """(time, lag) at offset changes at least `trend_spacing_s` apart, oldest first."""
        self.high_watermark: int | None = None
        self.high_watermark_at_commit: int | None = None
        self.lag: int | None = None
        self.assigned = False
        self.rewound_at: float | None = None


class PartitionStatusTracker(Generic[Key]):
    """Feed `update` once per sample per partition, then `evaluate`."""

    def __init__(self, rules: StatusRules | None = None) -> None:
        self.rules = rules or StatusRules()
        self._partitions: dict[Key, _Partition] = {}

    def __len__(self) -> int:
        return len(self._partitions)

    def update(
        self,
        key: Key,
        at: float,
        committed: int | None,
        high_watermark: int | None,
        lag: int | None,
        assigned: bool,
    ) -> None:
        """One sample of a partition. An unknown watermark or lag keeps the last known one, so
        a failed ListOffsets does not flap the verdict."""
        partition = self._partitions.get(key)
        if partition is None:
            partition = self._partitions[key] = _Partition()
        partition.assigned = assigned
        if high_watermark is not None:
            partition.high_watermark = high_watermark
        if lag is not None:
            partition.lag = lag
        if committed is None:
            # No commit (never, or expired): nothing to judge until there is one.
            partition.committed = None
            partition.changed_at = None
            partition.trend.clear()
            return
        if committed == partition.committed:
            if partition.high_watermark_at_commit is None:
                partition.high_watermark_at_commit = high_watermark
            return
        rules = self.rules
        previous = partition.committed
        if previous is not None:
            if committed < previous:
                partition.rewound_at = at
                partition.trend.clear()  # the trend before a reset says nothing after it
            elif partition.changed_at is not None:
                _push(partition.gaps, at - partition.changed_at, rules.commits_kept)
            partition.changed_at = at
        partition.committed = committed
        partition.committed_since = at
        partition.high_watermark_at_commit = high_watermark
        trend = partition.trend
        if lag is not None and (not trend or at - trend[-1][0] >= rules.trend_spacing_s):
            _push(trend, (at, lag), rules.commits_kept)

    def evaluate(self, key: Key, now: float) -> str:
        """The partition's status (one of PARTITION_STATUSES) at time `now`."""
        return self.evaluate_until(key, now)[0]

    def evaluate_until(self, key: Key, now: float) -> tuple[str, float]:
        """(status at `now`, until): without a new `update`, the status is the same at every
        time from `now` up to (not including) `until`, so a caller may reuse it until then.
        Most partitions hold their status for minutes (a quiet estate: until STOP is due), and
        re-evaluating 20,000 of them every few seconds is most of the cost of the verdict."""
        partition = self._partitions.get(key)
        if partition is None or partition.committed is None or partition.lag is None:
            return OK, _FOREVER
        rules = self.rules
        if partition.lag <= rules.allowed_lag:
            return OK, _FOREVER
        rewound_at = partition.rewound_at
        if rewound_at is not None and now - rewound_at <= rules.window_s:
            return REWIND, _before(rewound_at + rules.window_s)
        threshold = self._stop_threshold(partition)
        if now - partition.committed_since > threshold:
            if not partition.assigned:
                return STOP, _FOREVER
            at_commit = partition.high_watermark_at_commit
            if (at_commit is not None and partition.high_watermark is not None
                    and partition.high_watermark > at_commit):
                return STALL, _FOREVER
            until = _FOREVER
        else:
            until = _before(partition.committed_since + threshold)
        # The trend's verdict changes only when its oldest point in the window leaves it.
        since = now - rules.window_s
        oldest = next((at for at, _ in partition.trend if at >= since), None)
        if oldest is not None:
            until = min(until, _before(oldest + rules.window_s))
        return (WARN if self._falling_behind(partition, now) else OK), until

    def _stop_threshold(self, partition: _Partition) -> float:
        if not partition.gaps:
            return self.rules.stop_after_s
        median = sorted(partition.gaps)[len(partition.gaps) // 2]
        return max(self.rules.stop_after_s, self.rules.interval_factor * median)

    def _falling_behind(self, partition: _Partition, now: float) -> bool:
        """The lag rose at every trend point within the window, over at least
        `min_commits_for_warn` of them. Strictly: small lags tie often, and "never decreased"
        would then fire by chance (7 % for five readings drawn from 2, 3, 4)."""
        since = now - self.rules.window_s
        count = 0
        later: int | None = None
        for at, lag in reversed(partition.trend):  # newest first, no list built
            if at < since:
                break
            if later is not None and lag >= later:
                return False
            later = lag
            count += 1
        return count >= self.rules.min_commits_for_warn

    def forget(self, key: Key) -> None:
        self._partitions.pop(key, None)

    def retain(self, keep: Callable[[Key], bool]) -> None:
        """Drop the partitions for which `keep(key)` is false (no longer reported)."""
        for key in [k for k in self._partitions if not keep(k)]:
            del self._partitions[key]


def _before(moment: float) -> float:
    """A hair before `moment`: the rules compare differences (`now - since > threshold`), which
    float rounding can make true up to an ulp before `since + threshold`."""
    return moment - 1e-9 - abs(moment) * 1e-12


def _push(items: list[_T], item: _T, limit: int) -> None:
    items.append(item)
    if len(items) > limit:
        del items[0]


def worst_status(statuses: Iterable[str]) -> str:
    """The most severe partition status (OK for none)."""
    present = set(statuses)  # a set first: one status per partition, ~22,000 per sample
    return max(present, key=_SEVERITY.__getitem__, default=OK)


def group_status(statuses: Iterable[str]) -> str:
    """Burrow's group word from partition statuses: ERR, WARN or OK."""
    worst = worst_status(statuses)
    if worst in (STOP, STALL, REWIND):
        return ERR
    return worst


def status_changes(
    previous: Mapping[Key, str], current: Mapping[Key, str]
) -> list[tuple[Key, str | None, str | None]]:
    """(key, old, new) for every status that changed, None meaning "not reported", so the
    service logs once per change. A key appearing as OK or disappearing while OK is no news
    (at start-up every partition appears)."""
    changes: list[tuple[Key, str | None, str | None]] = []
    for key, new in current.items():
        old = previous.get(key)
        if old != new and not (old is None and new == OK):
            changes.append((key, old, new))
    for key, old in previous.items():
        if key not in current and old != OK:
            changes.append((key, old, None))
    return changes
